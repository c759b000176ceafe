"""Pascal VOC detection dataset (VOCdevkit layout).

Layout: ``root/VOC<year>/{JPEGImages/<id>.jpg, Annotations/<id>.xml,
ImageSets/Main/<split>.txt}``. Several (year, split) pairs are concatenated in
the given order, e.g. ``(("2007", "trainval"), ("2012", "trainval"))`` for 07+12.

Box convention: VOC xml boxes are 1-based inclusive pixel indices
(``xmin = 1`` is the first pixel column, ``xmax = W`` the last). They are
converted to 0-based *continuous* XYXY coordinates (a box covering the whole
image is ``[0, 0, W, H]``) by ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax,
y2 = ymax`` (as detectron2's ``load_voc_instances`` does), then clipped to the
image size given in the xml.

``dataset[i]`` returns ``(image, target)`` like :class:`data.coco.COCODetection`,
with ``image_id`` = file stem (str), plus ``difficult`` bool (N,). With
``keep_difficult=False`` (training) difficult objects are removed from
``boxes``/``labels``/``difficult``; with ``keep_difficult=True`` (evaluation)
they are kept and flagged. ``crowd_boxes`` is always empty (0, 4).
"""
from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from data.dataset_base import AnnotationFileNotFoundError, DatasetError, DetectionDatasetBase
from utils.boxes import clip_boxes

logger = logging.getLogger(__name__)

__all__ = ["VOCDetection", "VOC_CLASSES", "read_xml", "xml_text", "xml_size", "voc_object"]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def xml_text(node: ET.Element, tag: str, xml_path: Path, *, required: bool = True) -> Optional[str]:
    child = node.find(tag)
    if child is None or child.text is None:
        if required:
            raise DatasetError(f"VOC annotation {xml_path}: missing <{tag}>")
        return None
    return child.text.strip()


def read_xml(xml_path: Path) -> ET.Element:
    if not xml_path.is_file():
        raise AnnotationFileNotFoundError(f"VOC annotation file not found: {xml_path}")
    try:
        return ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise DatasetError(f"VOC annotation {xml_path} is not valid XML: {e}") from e


def xml_size(node: ET.Element, xml_path: Path) -> tuple[int, int]:
    """(height, width) of the annotation's <size>; (-1, -1) without one."""
    size = node.find("size")
    if size is None:
        return -1, -1
    try:
        return int(float(xml_text(size, "height", xml_path))), int(float(xml_text(size, "width", xml_path)))
    except ValueError as e:
        raise DatasetError(f"VOC annotation {xml_path}: malformed <size>: {e}") from e


def voc_object(obj: ET.Element, k: int, xml_path: Path) -> tuple[str, list[float], bool]:
    """(class name, 0-based continuous box before clipping, difficult) of ``<object>`` #k of ``xml_path``."""
    name = xml_text(obj, "name", xml_path)
    diff_text = xml_text(obj, "difficult", xml_path, required=False)
    is_difficult = bool(int(float(diff_text))) if diff_text else False
    bnd = obj.find("bndbox")
    if bnd is None:
        raise DatasetError(f"VOC annotation {xml_path}: object #{k} ({name}) has no <bndbox>")
    try:
        xmin, ymin, xmax, ymax = (float(xml_text(bnd, t, xml_path)) for t in ("xmin", "ymin", "xmax", "ymax"))
    except ValueError as e:
        raise DatasetError(f"VOC annotation {xml_path}: object #{k} ({name}) has a malformed <bndbox>: {e}") from e
    return name, [xmin - 1.0, ymin - 1.0, xmax, ymax], is_difficult


class VOCDetection(DetectionDatasetBase):
    """Pascal VOC (07, 12, 07+12, ...) detection dataset.

    Args:
        root: the VOCdevkit folder (holding VOC2007/, VOC2012/).
        image_sets: sequence of (year, split) pairs, concatenated in order.
        transforms: ``t(image, target, rng) -> (image, target)``.
        input_format: "BGR" or "RGB" channel order of the returned tensor.
        keep_difficult: keep difficult objects (flagged in ``difficult``) or drop them.
        max_skip_fraction: unreadable images tolerated: max(10, fraction * len).
    """

    per_box_extra = ("difficult",)

    def __init__(self, root, image_sets: Sequence[tuple[str, str]] = (("2007", "trainval"),),
                 transforms: Optional[Callable] = None, input_format: str = "BGR", keep_difficult: bool = False,
                 max_skip_fraction: float = 0.01):
        super().__init__(transforms=transforms, input_format=input_format, max_skip_fraction=max_skip_fraction)
        self.root = str(root)
        if len(image_sets) == 2 and all(isinstance(s, (str, int)) for s in image_sets):
            image_sets = (tuple(image_sets),)  # a single ("2007", "trainval") pair
        self.image_sets = tuple((str(y), str(s)) for y, s in image_sets)
        self.keep_difficult = keep_difficult
        self.class_names = list(VOC_CLASSES)
        self._class_to_label = {c: i for i, c in enumerate(VOC_CLASSES)}
        records: list[dict] = []
        for year, split in self.image_sets:
            records.extend(self._load_split(Path(root), year, split))
        self._pack_records(records, id_is_int=False)
        self.ids = [str(v) for v in self._image_ids]

    def _load_split(self, root: Path, year: str, split: str) -> list[dict]:
        voc_dir = root / f"VOC{year}"
        list_file = voc_dir / "ImageSets" / "Main" / f"{split}.txt"
        if not list_file.is_file():
            raise AnnotationFileNotFoundError(f"VOC image-set file not found: {list_file} "
                                              f"(expected VOCdevkit layout root/VOC<year>/ImageSets/Main/<split>.txt)")
        with open(list_file, "r", encoding="utf-8") as f:
            ids = [line.split()[0] for line in f if line.strip()]
        records = []
        n_bad = 0
        bad_examples: list[str] = []
        for image_id in ids:
            xml_path = voc_dir / "Annotations" / f"{image_id}.xml"
            rec, bad = self._parse_xml(xml_path)
            n_bad += len(bad)
            bad_examples.extend(bad[: max(0, 5 - len(bad_examples))])
            rec["file_name"] = os.path.join(str(voc_dir), "JPEGImages", f"{image_id}.jpg")
            rec["image_id"] = image_id
            records.append(rec)
        if n_bad:
            logger.warning("VOC%s %s (%s): dropped %d box(es) with zero/negative width or height after conversion "
                           "and clipping (e.g. %s)", year, split, list_file, n_bad, bad_examples)
        return records

    def _parse_xml(self, xml_path: Path) -> tuple[dict, list[str]]:
        """(record, descriptions of the boxes dropped as empty) of one annotation file."""
        node = read_xml(xml_path)
        height, width = xml_size(node, xml_path)
        objects = [self._object(obj, k, xml_path) for k, obj in enumerate(node.findall("object"))]
        boxes = np.asarray([box for _, box, _ in objects], dtype=np.float64).reshape(-1, 4)
        if height > 0 and width > 0:
            boxes = clip_boxes(boxes, height, width)
        nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        bad = [f"{xml_path.name} object #{k}" for k in np.flatnonzero(~nonempty)]
        is_difficult = np.array([d for _, _, d in objects], dtype=np.bool_)
        keep = nonempty & (self.keep_difficult | ~is_difficult)
        return {
            "height": height,
            "width": width,
            "boxes": boxes[keep].reshape(-1, 4),
            "labels": np.asarray([label for label, _, _ in objects], dtype=np.int64)[keep],
            "difficult": is_difficult[keep],
            "crowd_boxes": np.zeros((0, 4), dtype=np.float64),
        }, bad

    def _object(self, obj: ET.Element, k: int, xml_path: Path) -> tuple[int, list[float], bool]:
        """(label, 0-based continuous box before clipping, difficult) of object #k."""
        name, box, is_difficult = voc_object(obj, k, xml_path)
        if name not in self._class_to_label:
            raise DatasetError(f"VOC annotation {xml_path}: unknown class name {name!r} in object #{k} "
                               f"(expected one of the 20 VOC classes)")
        return self._class_to_label[name], box, is_difficult

    def __repr__(self) -> str:
        return (f"VOCDetection(root={self.root!r}, image_sets={self.image_sets}, images={len(self)}, "
                f"keep_difficult={self.keep_difficult}, input_format={self.input_format!r})")
