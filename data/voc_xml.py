"""Pascal-VOC XML files in any folder (LabelImg; the "Pascal VOC" exports of CVAT, Roboflow, Label Studio),
beside their images or in a parallel folder.

With ``data.dataset: voc_xml``, ``data.root`` is the dataset folder and a split (``data.train_split``,
``data.val_split``) is

* a folder under ``data.root``: every ``*.xml`` in it and below, e.g. ``root/train/``, ``root/valid/``
  (``.`` is ``data.root`` itself);
* or a list file ``root/<split>`` or ``root/<split>.txt``: one XML path a line, relative to ``data.root``.

The image of ``x/a.xml`` is its ``<filename>`` (or ``a`` with an image suffix) in ``x/``, else in a parallel
folder: ``x`` with its last folder called ``Annotations``, ``annotations``, ``xml``, ``xmls`` or ``labels``
replaced by ``JPEGImages``, ``images``, ``Images`` or ``imgs`` (a VOCdevkit: ``VOC2007/Annotations/a.xml`` ->
``VOC2007/JPEGImages/a.jpg``). The image size is the XML's ``<size>``, else the image header's.

Classes: ``data.class_names`` in that order, else the sorted names found in the XML files of
``data.train_split`` and ``data.val_split`` (so that both splits number the classes alike). A name outside
``data.class_names`` makes one :class:`DatasetError` naming the first file and object.

Boxes as in :mod:`data.voc`: 1-based inclusive pixels become 0-based continuous xyxy (``x1 = xmin - 1``,
``x2 = xmax``). ``difficult`` objects become COCO crowd regions (``iscrowd: 1``): they are not trained on (as
:class:`data.voc.VOCDetection` drops them) and the COCO evaluation counts them neither as missed nor, when
detected, as false positives (VOC's rule; COCO measures a detection's overlap with a crowd region over the
detection's own area).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Optional, Sequence

from data.coco import COCODetection
from data.dataset_base import (IMAGE_SUFFIXES, AnnotationFileNotFoundError, DatasetError, Issue, RawSplit,
                               image_size)
from data.voc import read_xml, voc_object, xml_size, xml_text

logger = logging.getLogger(__name__)

__all__ = ["split_xml_files", "find_image", "class_names_in", "read_voc_xml_files", "read_voc_xml_split",
           "voc_xml_image_root", "VOCXMLDetection"]

ANNOTATION_DIRS = ("Annotations", "annotations", "xml", "xmls", "labels")
IMAGE_DIRS = ("JPEGImages", "images", "Images", "imgs")


def split_xml_files(root, split: str) -> list[Path]:
    """The XML files of ``split`` under ``root`` (a folder, searched recursively, or a list file), sorted."""
    root = Path(root)
    base = root / split
    if base.is_dir():
        files = sorted(base.rglob("*.xml"))
    else:
        listing = base if base.is_file() else base.with_name(base.name + ".txt")
        if not listing.is_file():
            raise AnnotationFileNotFoundError(
                f"voc_xml split {split!r}: neither a folder {base} nor a list file {listing} (data.root is the "
                f"dataset folder, data.train_split / data.val_split name folders or list files in it)")
        lines = [line.strip() for line in listing.read_text(encoding="utf-8").splitlines()]
        files = [root / line for line in lines if line]
    if not files:
        raise DatasetError(f"voc_xml split {split!r}: no XML file in {base}")
    return files


def find_image(xml_path: Path, filename: Optional[str]) -> Optional[Path]:
    """The image of ``xml_path`` (see the module docstring); None when there is none."""
    folders = [xml_path.parent]
    parts = xml_path.parent.parts
    for i in range(len(parts) - 1, -1, -1):  # the last annotation folder of the path
        if parts[i] in ANNOTATION_DIRS:
            folders += [Path(*parts[:i], d, *parts[i + 1:]) for d in IMAGE_DIRS]
            break
    stems = [Path(filename).stem] if filename else []
    stems += [xml_path.stem] if xml_path.stem not in stems else []
    for folder in folders:
        if filename and (folder / filename).is_file():
            return folder / filename
        for stem in stems:
            for suffix in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES):
                if (folder / (stem + suffix)).is_file():
                    return folder / (stem + suffix)
    return None


def class_names_in(xml_files: Sequence[Path]) -> list[str]:
    """The sorted class names of the objects in ``xml_files``."""
    names = set()
    for f in xml_files:
        names.update(xml_text(obj, "name", f) for obj in read_xml(f).findall("object"))
    return sorted(names)


def _read_one(xml_path: Path, root: Path, image_id: int, raw: RawSplit, cat_ids: dict[str, int]) -> None:
    """Append the image and the objects of one XML file to ``raw``."""
    node = read_xml(xml_path)
    filename = xml_text(node, "filename", xml_path, required=False)
    image = find_image(xml_path, filename)
    if image is None:
        image = xml_path.parent / (filename or f"{xml_path.stem}.jpg")
        raw.issues.append(Issue("image_not_found", str(xml_path), f"no image {image.name} beside it or in a "
                                                                  f"parallel folder"))
    h, w = xml_size(node, xml_path)
    if h <= 0 or w <= 0:
        h, w = image_size(image) or (0, 0)
    name = os.path.relpath(image, root) if image.is_relative_to(root) else os.path.abspath(image)
    raw.coco["images"].append({"id": image_id, "file_name": name, "height": h, "width": w})
    anns = raw.coco["annotations"]
    for k, obj in enumerate(node.findall("object")):
        cls, (x1, y1, x2, y2), difficult = voc_object(obj, k, xml_path)
        if cls not in cat_ids:
            raw.issues.append(Issue("label_outside_names", str(xml_path), f"object #{k}: class {cls!r} is not "
                                    f"one of data.class_names {sorted(cat_ids)}"))
            continue
        box = [x1, y1, x2 - x1, y2 - y1]
        anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat_ids[cls], "bbox": box,
                     "area": box[2] * box[3], "iscrowd": int(difficult), "source": f"{xml_path} object #{k}"})


def voc_xml_image_root(root) -> Path:
    """The folder the images of a split under ``root`` are named relative to (absolute when outside it)."""
    return Path(os.path.abspath(root))


def read_voc_xml_files(xml_files: Sequence[Path], root, class_names: Optional[Sequence[str]] = None) -> RawSplit:
    """The XML files as read, in COCO form (image ids 1..N in file order, category id of class k: k + 1);
    images named relative to ``root``; ``class_names`` None: the sorted names found in the files."""
    root = voc_xml_image_root(root)
    names = list(class_names) if class_names is not None else class_names_in(xml_files)
    if not names:
        raise DatasetError(f"no object in the {len(xml_files)} XML file(s) under {root} (e.g. {xml_files[0]}): no "
                           f"class to learn; set data.class_names to name the classes")
    cat_ids = {name: k + 1 for k, name in enumerate(names)}
    raw = RawSplit({"images": [], "annotations": [], "categories": [{"id": i, "name": n} for n, i in cat_ids.items()]},
                   root)
    for image_id, xml_path in enumerate(xml_files, start=1):
        _read_one(Path(os.path.abspath(xml_path)), root, image_id, raw, cat_ids)
    return raw


def read_voc_xml_split(root, split: str, class_names: Optional[Sequence[str]] = None) -> RawSplit:
    """Split ``split`` of the folder ``root`` as read (see the module docstring), in COCO form."""
    return read_voc_xml_files(split_xml_files(root, split), root, class_names)


class VOCXMLDetection(COCODetection):
    """Split ``split`` of a folder of VOC XML files, read into COCO form and served as
    :class:`data.coco.COCODetection` serves a json (``coco``: the in-memory ground truth the COCO evaluator
    scores). ``class_names``: the classes in label order (None: the sorted names in this split's files)."""

    def __init__(self, root, split: str, class_names: Optional[Sequence[str]] = None,
                 transforms: Optional[Callable] = None, input_format: str = "BGR", filter_empty: bool = True,
                 max_skip_fraction: float = 0.01):
        self.root, self.split = Path(root), split
        self._raw: Optional[RawSplit] = read_voc_xml_split(self.root, split, class_names)
        self._raw.raise_for_labels_outside_names()
        self._raw.log_issues(self._describe())
        super().__init__(self._raw.image_dir, self.root / split, transforms, input_format, filter_empty,
                         max_skip_fraction)
        self._raw = None  # the COCO index holds the dict now

    def _load_annotations(self) -> dict:
        return (self._raw or read_voc_xml_split(self.root, self.split, self.class_names)).coco

    def _describe(self) -> str:
        return f"voc_xml dataset {self.root} split {self.split!r}"

    def __repr__(self) -> str:
        return (f"VOCXMLDetection(root={str(self.root)!r}, split={self.split!r}, images={len(self)}, "
                f"classes={len(self.class_names)}, filter_empty={self.filter_empty})")
