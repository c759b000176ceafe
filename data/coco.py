"""COCO-format detection dataset (the shared machinery: :mod:`data.dataset_base`).

Output of ``dataset[i]`` is ``(image, target)``:

* ``image``: torch ``uint8`` tensor (3, H, W) in ``input_format`` channel order
  ("BGR" as decoded by OpenCV, or "RGB"). No mean/std normalisation: the model
  normalises.
* ``target`` dict: ``boxes`` float32 (N, 4) XYXY absolute pixels of the
  transformed image; ``labels`` int64 (N,) contiguous 0..K-1; ``image_id`` (COCO
  image id, int); ``orig_size`` int64 (2,) = (h, w) as decoded; ``size`` int64
  (2,) = (h, w) after transforms; ``file_name`` (str path); ``crowd_boxes``
  float32 (M, 4) (``iscrowd=1`` annotations, transformed like the boxes but NOT
  part of ``boxes``/``labels``: the official training code drops them).

Bad inputs: a missing / malformed annotation file and structural errors raise at
construction with a message naming the file; degenerate boxes are dropped (one
warning per file); boxes extending outside the image are clipped to it (logged when one reaches more than
:data:`OUTSIDE_TOLERANCE` px out: less is the rounding of normalised or integer coordinates). An image
that cannot be read at ``__getitem__`` time is logged, counted and replaced by
the next readable sample; too many of them raise ``RuntimeError``.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from pycocotools.coco import COCO

from data.dataset_base import AnnotationFileNotFoundError, DatasetError, DetectionDatasetBase
from utils.boxes import clip_boxes


__all__ = ["COCO_CLASSES", "COCODetection", "load_coco_json"]

# COCO 2017's 80 detection classes in category-id order (ids 1..90 with gaps): the label order of a COCO-trained
# model, which tools/convert_official.py stores in a converted checkpoint's class_names
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)


_REQUIRED_KEYS = ("images", "annotations", "categories")
OUTSIDE_TOLERANCE = 1.0  # px a box may reach out of its image before its clipping is reported (tools/check_dataset.py)


def load_coco_json(ann_file: Path) -> dict:
    """The COCO annotation dict of ``ann_file``, with its three lists; a missing or malformed file raises."""
    if not ann_file.is_file():
        raise AnnotationFileNotFoundError(f"COCO annotation file not found: {ann_file}")
    try:
        with open(ann_file, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"COCO annotation file {ann_file} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise DatasetError(f"COCO annotation file {ann_file}: top level must be a JSON object with keys "
                         f"{list(_REQUIRED_KEYS)}, got {type(data).__name__}")
    missing = [k for k in _REQUIRED_KEYS if k not in data]
    if missing:
        raise DatasetError(f"COCO annotation file {ann_file} is missing required key(s) {missing}; "
                         f"a COCO detection file needs {list(_REQUIRED_KEYS)}")
    for k in _REQUIRED_KEYS:
        if not isinstance(data[k], list):
            raise DatasetError(f"COCO annotation file {ann_file}: '{k}' must be a list, got {type(data[k]).__name__}")
    return data


def _categories(cats: list, path: Path) -> dict[int, str]:
    """Category id -> name; an empty list, an entry without id or a duplicate id raises."""
    if len(cats) == 0:
        raise DatasetError(f"COCO annotation file {path}: 'categories' is empty")
    cat_names: dict[int, str] = {}
    for c in cats:
        if not isinstance(c, dict) or "id" not in c:
            raise DatasetError(f"COCO annotation file {path}: category entry without 'id': {c!r}")
        cid = int(c["id"])
        if cid in cat_names:
            raise DatasetError(f"COCO annotation file {path}: duplicate category id {cid}")
        cat_names[cid] = str(c.get("name", cid))
    return cat_names


def _images(entries: list, path: Path) -> dict[int, dict]:
    """Image id -> image entry; an entry without id / file_name or a duplicate id raises."""
    images: dict[int, dict] = {}
    for k, im in enumerate(entries):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise DatasetError(f"COCO annotation file {path}: image entry #{k} needs 'id' and 'file_name': {im!r}")
        iid = int(im["id"])
        if iid in images:
            raise DatasetError(f"COCO annotation file {path}: duplicate image id {iid}")
        images[iid] = im
    return images


def _check_annotation(k: int, ann: Any, *, seen_ids: set, cat_id_to_label: dict, images: dict, path: Path) -> None:
    """Annotation #k is an object with a new id, its keys, a known category and a known image."""
    if not isinstance(ann, dict):
        raise DatasetError(f"COCO annotation file {path}: annotation #{k} is not an object: {ann!r}")
    aid = ann.get("id")
    if aid is None:
        raise DatasetError(f"COCO annotation file {path}: annotation #{k} has no 'id'")
    if aid in seen_ids:
        raise DatasetError(f"COCO annotation file {path}: duplicate annotation id {aid}")
    seen_ids.add(aid)
    for key in ("image_id", "category_id", "bbox"):
        if key not in ann:
            raise DatasetError(f"COCO annotation file {path}: annotation id {aid} has no '{key}'")
    cid = ann["category_id"]
    if cid not in cat_id_to_label:
        known = sorted(cat_id_to_label)
        raise DatasetError(f"COCO annotation file {path}: annotation id {aid} has unknown category id {cid} "
                           f"(known category ids: {known[:20]}{' ...' if len(known) > 20 else ''})")
    if ann["image_id"] not in images:
        raise DatasetError(f"COCO annotation file {path}: annotation id {aid} refers to image id {ann['image_id']} "
                           f"that is not in 'images'")


def _xyxy(ann: dict, path: Path) -> Optional[list[float]]:
    """The annotation's [x, y, w, h] as [x1, y1, x2, y2]; None for a non-finite or non-positive size."""
    bbox = ann["bbox"]
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise DatasetError(f"COCO annotation file {path}: annotation id {ann['id']} has a malformed bbox {bbox!r} "
                           f"(expected [x, y, width, height])") from None
    if not (math.isfinite(x) and math.isfinite(y) and w > 0 and h > 0 and math.isfinite(w) and math.isfinite(h)):
        return None
    return [x, y, x + w, y + h]


@dataclass
class _AnnotationBoxes:
    """The well-formed boxes of a file in annotation order: image id, xyxy box, label (-1: crowd), annotation id."""

    image_ids: list
    boxes: np.ndarray  # (N, 4) float64 xyxy
    labels: list[int]
    ann_ids: list
    bad_size: list  # ids of the annotations dropped for their size
    num_clipped: int = 0  # boxes clipped by more than OUTSIDE_TOLERANCE px

    @classmethod
    def read(cls, anns: list, *, images: dict, cat_id_to_label: dict, path: Path) -> "_AnnotationBoxes":
        image_ids, boxes, labels, ann_ids, bad_size = [], [], [], [], []
        seen: set = set()
        for k, ann in enumerate(anns):
            _check_annotation(k, ann, seen_ids=seen, cat_id_to_label=cat_id_to_label, images=images, path=path)
            box = _xyxy(ann, path)
            if box is None:
                bad_size.append(ann["id"])
                continue
            image_ids.append(ann["image_id"])
            boxes.append(box)
            labels.append(-1 if ann.get("iscrowd", 0) else cat_id_to_label[ann["category_id"]])
            ann_ids.append(ann["id"])
        return cls(image_ids, np.asarray(boxes, dtype=np.float64).reshape(-1, 4), labels, ann_ids, bad_size)

    def clip_to_images(self, images: dict) -> list:
        """Clip the boxes of images with a recorded size to it; drop the boxes left empty, returning their ids."""
        hw = np.array([[images[i].get("height") or 0, images[i].get("width") or 0] for i in self.image_ids],
                      dtype=np.float64).reshape(-1, 2)
        known = (hw[:, 0] != 0) & (hw[:, 1] != 0)
        clipped = self.boxes.copy()
        clipped[known] = clip_boxes(self.boxes[known], hw[known, :1], hw[known, 1:])
        changed = (clipped != self.boxes).any(axis=1)
        self.num_clipped = int((np.abs(clipped - self.boxes) > OUTSIDE_TOLERANCE).any(axis=1).sum())
        empty = changed & ~((clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1]))
        outside = [a for a, e in zip(self.ann_ids, empty) if e]
        keep = np.flatnonzero(~empty)
        self.image_ids = [self.image_ids[i] for i in keep]
        self.labels = [self.labels[i] for i in keep]
        self.ann_ids = [self.ann_ids[i] for i in keep]
        self.boxes = clipped[keep]
        return outside

    def per_image(self, images: dict) -> dict[int, dict[str, list]]:
        """Image id -> {"boxes", "labels", "crowd"} lists, in annotation order."""
        out: dict[int, dict[str, list]] = {iid: {"boxes": [], "labels": [], "crowd": []} for iid in images}
        for iid, box, label in zip(self.image_ids, self.boxes, self.labels):
            rec = out[iid]
            if label < 0:
                rec["crowd"].append(box)
            else:
                rec["boxes"].append(box)
                rec["labels"].append(label)
        return out


class COCODetection(DetectionDatasetBase):
    """Any COCO-format detection json (COCO 2017 or a custom dataset).

    Args:
        image_dir: folder the ``file_name`` entries are relative to.
        ann_file: COCO-format json.
        transforms: ``t(image, target, rng) -> (image, target)`` (see data.transforms).
        input_format: channel order of the returned tensor, "BGR" or "RGB".
        filter_empty: drop images with no valid non-crowd box (official training
            default; pass False for evaluation).
        max_skip_fraction: unreadable images tolerated: max(10, fraction * len).
        index: build the pycocotools index (:attr:`coco`) now, from the parsed file (evaluation splits).
            Without it (training splits) the dataset keeps only its packed arrays, and :attr:`coco` reads
            the file again if asked: a training split never needs it, and at COCO scale the parsed JSON
            and its index are several GB per process.

    Category ids are mapped to contiguous labels 0..K-1 in sorted id order:
    ``label_to_cat_id[label] == category_id``, ``cat_id_to_label[category_id] == label``.
    COCO boxes [x, y, w, h] become XYXY [x, y, x + w, y + h].
    """

    def __init__(self, image_dir, ann_file, transforms: Optional[Callable] = None, input_format: str = "BGR",
                 filter_empty: bool = True, max_skip_fraction: float = 0.01, index: bool = True):
        super().__init__(transforms=transforms, input_format=input_format, max_skip_fraction=max_skip_fraction)
        self.image_dir = str(image_dir)
        self.ann_file = str(ann_file)
        self.filter_empty = filter_empty
        path = Path(ann_file)
        data = self._load_annotations()
        records = self._parse(data, path)
        self._pack_records(records, id_is_int=True)
        self.ids = [int(v) for v in self._image_ids]
        # pycocotools index over the already-parsed dict (no second file read, no stdout noise)
        self._coco = self._make_coco(data) if index else None

    # -------------------------------------------------------------- pycocotools
    @staticmethod
    def _make_coco(data: dict):
        coco = COCO()
        coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco

    @property
    def coco(self):
        """pycocotools ``COCO`` object of the annotations as read (rebuilt lazily after pickling): the ground
        truth the COCO evaluator scores against."""
        if self._coco is None:
            self._coco = self._make_coco(self._load_annotations())
        return self._coco

    def _load_annotations(self) -> dict:
        """The COCO annotation dict: ``ann_file`` read. The datasets of other layouts (:mod:`data.yolo`,
        :mod:`data.voc_xml`) read their own files into one here."""
        return load_coco_json(Path(self.ann_file))

    def _describe(self) -> str:
        """What the log messages call the annotations."""
        return f"COCO annotation file {self.ann_file}"

    @property
    def _logger(self) -> logging.Logger:
        """The logger of the dataset's own module (``data.yolo`` for a YOLO set read into COCO form)."""
        return logging.getLogger(type(self).__module__)

    @staticmethod
    def _where(data: dict, ids: list) -> list:
        """Annotations ``ids`` named by their ``source`` (file and line, from the YOLO / VOC-XML readers) or id."""
        wanted = set(ids)
        found = {a["id"]: a.get("source", a["id"]) for a in data["annotations"] if a["id"] in wanted}
        return [found[i] for i in ids]

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_coco"] = None  # DataLoader workers do not need it; avoids pickling the whole json
        return state

    # -------------------------------------------------------------- parsing
    def _parse(self, data: dict, path: Path) -> list[dict]:
        """The per-image records of an annotation dict (see the class docstring for what is checked)."""
        cat_names = _categories(data["categories"], path)
        self.label_to_cat_id = sorted(cat_names)
        self.cat_id_to_label = {cid: i for i, cid in enumerate(self.label_to_cat_id)}
        self.class_names = [cat_names[cid] for cid in self.label_to_cat_id]
        images = _images(data["images"], path)
        boxes = _AnnotationBoxes.read(data["annotations"], images=images, cat_id_to_label=self.cat_id_to_label,
                                      path=path)
        outside = boxes.clip_to_images(images)
        if boxes.bad_size or outside:
            self._logger.warning("%s: dropped %d box(es) with zero/negative (or non-finite) width or height (e.g. "
                           "annotation ids %s) and %d box(es) lying entirely outside their image (e.g. annotation ids "
                           "%s)", self._describe(), len(boxes.bad_size), self._where(data, boxes.bad_size[:5]),
                           len(outside), self._where(data, outside[:5]))
        if boxes.num_clipped:
            self._logger.info("%s: clipped %d box(es) reaching more than %g px outside their image",
                              self._describe(), boxes.num_clipped, OUTSIDE_TOLERANCE)
        return self._records(images, boxes.per_image(images))

    def _records(self, images: dict[int, dict], per_image: dict[int, dict[str, list]]) -> list[dict]:
        """One record per image in id order (those without non-crowd boxes left out with ``filter_empty``)."""
        records = []
        n_empty = 0
        for iid in sorted(images):
            rec = per_image[iid]
            if self.filter_empty and len(rec["boxes"]) == 0:
                n_empty += 1
                continue
            im = images[iid]
            records.append({
                "file_name": os.path.join(self.image_dir, im["file_name"]),
                "image_id": iid,
                "height": int(im.get("height") or -1),
                "width": int(im.get("width") or -1),
                "boxes": np.asarray(rec["boxes"], dtype=np.float64).reshape(-1, 4),
                "labels": np.asarray(rec["labels"], dtype=np.int64),
                "crowd_boxes": np.asarray(rec["crowd"], dtype=np.float64).reshape(-1, 4),
            })
        if n_empty:
            self._logger.info("%s: filter_empty removed %d of %d images without non-crowd boxes", self._describe(),
                        n_empty, len(images))
        if not records:
            self._logger.warning("%s: the dataset is empty (%d images in the file, %d removed by filter_empty)",
                           self._describe(), len(images), n_empty)
        return records

    def __repr__(self) -> str:
        return (f"COCODetection(ann_file={self.ann_file!r}, image_dir={self.image_dir!r}, images={len(self)}, "
                f"classes={len(self.class_names)}, filter_empty={self.filter_empty}, "
                f"input_format={self.input_format!r})")
