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
warning per file); boxes extending outside the image are clipped to it. An image
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
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from data.dataset_base import AnnotationFileNotFoundError, DatasetError, DetectionDatasetBase

logger = logging.getLogger(__name__)

__all__ = ["COCODetection"]


_REQUIRED_KEYS = ("images", "annotations", "categories")


def _load_coco_json(ann_file: Path) -> dict:
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

    Category ids are mapped to contiguous labels 0..K-1 in sorted id order:
    ``label_to_cat_id[label] == category_id``, ``cat_id_to_label[category_id] == label``.
    COCO boxes [x, y, w, h] become XYXY [x, y, x + w, y + h].
    """

    def __init__(self, image_dir, ann_file, transforms: Optional[Callable] = None, input_format: str = "BGR",
                 filter_empty: bool = True, max_skip_fraction: float = 0.01):
        super().__init__(transforms=transforms, input_format=input_format, max_skip_fraction=max_skip_fraction)
        self.image_dir = str(image_dir)
        self.ann_file = str(ann_file)
        self.filter_empty = filter_empty
        path = Path(ann_file)
        data = _load_coco_json(path)
        records = self._parse(data, path)
        self._pack_records(records, id_is_int=True)
        self.ids = [int(v) for v in self._image_ids]
        # pycocotools index over the already-parsed dict (no second file read, no stdout noise)
        self._coco = self._make_coco(data)

    # -------------------------------------------------------------- pycocotools
    @staticmethod
    def _make_coco(data: dict):
        from pycocotools.coco import COCO
        coco = COCO()
        coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco

    @property
    def coco(self):
        """pycocotools ``COCO`` object of ``ann_file`` (rebuilt lazily after pickling)."""
        if self._coco is None:
            self._coco = self._make_coco(_load_coco_json(Path(self.ann_file)))
        return self._coco

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_coco"] = None  # DataLoader workers do not need it; avoids pickling the whole json
        return state

    # -------------------------------------------------------------- parsing
    def _parse(self, data: dict, path: Path) -> list[dict]:
        cats = data["categories"]
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
        self.label_to_cat_id = sorted(cat_names)
        self.cat_id_to_label = {cid: i for i, cid in enumerate(self.label_to_cat_id)}
        self.class_names = [cat_names[cid] for cid in self.label_to_cat_id]

        images: dict[int, dict] = {}
        for k, im in enumerate(data["images"]):
            if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
                raise DatasetError(f"COCO annotation file {path}: image entry #{k} needs 'id' and 'file_name': {im!r}")
            iid = int(im["id"])
            if iid in images:
                raise DatasetError(f"COCO annotation file {path}: duplicate image id {iid}")
            images[iid] = im

        per_image: dict[int, dict[str, list]] = {iid: {"boxes": [], "labels": [], "crowd": []} for iid in images}
        seen_ann_ids: set = set()
        bad_size: list = []
        outside: list = []
        n_clipped = 0
        for k, ann in enumerate(data["annotations"]):
            if not isinstance(ann, dict):
                raise DatasetError(f"COCO annotation file {path}: annotation #{k} is not an object: {ann!r}")
            aid = ann.get("id")
            if aid is None:
                raise DatasetError(f"COCO annotation file {path}: annotation #{k} has no 'id'")
            if aid in seen_ann_ids:
                raise DatasetError(f"COCO annotation file {path}: duplicate annotation id {aid}")
            seen_ann_ids.add(aid)
            for key in ("image_id", "category_id", "bbox"):
                if key not in ann:
                    raise DatasetError(f"COCO annotation file {path}: annotation id {aid} has no '{key}'")
            cid = ann["category_id"]
            if cid not in self.cat_id_to_label:
                raise DatasetError(f"COCO annotation file {path}: annotation id {aid} has unknown category id {cid} "
                                 f"(known category ids: {self.label_to_cat_id[:20]}"
                                 f"{' ...' if len(self.label_to_cat_id) > 20 else ''})")
            iid = ann["image_id"]
            if iid not in per_image:
                raise DatasetError(f"COCO annotation file {path}: annotation id {aid} refers to image id {iid} "
                                 f"that is not in 'images'")
            bbox = ann["bbox"]
            try:
                x, y, w, h = (float(v) for v in bbox)
            except (TypeError, ValueError):
                raise DatasetError(f"COCO annotation file {path}: annotation id {aid} has a malformed bbox {bbox!r} "
                                 f"(expected [x, y, width, height])") from None
            if not (math.isfinite(x) and math.isfinite(y) and w > 0 and h > 0 and math.isfinite(w) and math.isfinite(h)):
                bad_size.append(aid)
                continue
            box = [x, y, x + w, y + h]
            im = images[iid]
            H, W = im.get("height"), im.get("width")
            if H and W:
                clipped = [min(max(box[0], 0.0), W), min(max(box[1], 0.0), H),
                           min(max(box[2], 0.0), W), min(max(box[3], 0.0), H)]
                if clipped != box:
                    n_clipped += 1
                    box = clipped
                    if not (box[2] > box[0] and box[3] > box[1]):
                        outside.append(aid)
                        continue
            rec = per_image[iid]
            if ann.get("iscrowd", 0):
                rec["crowd"].append(box)
            else:
                rec["boxes"].append(box)
                rec["labels"].append(self.cat_id_to_label[cid])

        if bad_size or outside:
            logger.warning("COCO annotation file %s: dropped %d box(es) with zero/negative (or non-finite) width or "
                           "height (e.g. annotation ids %s) and %d box(es) lying entirely outside their image "
                           "(e.g. annotation ids %s)", path, len(bad_size), bad_size[:5], len(outside), outside[:5])
        if n_clipped:
            logger.info("COCO annotation file %s: clipped %d box(es) extending outside their image", path, n_clipped)

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
            logger.info("COCO annotation file %s: filter_empty removed %d of %d images without non-crowd boxes",
                        path, n_empty, len(images))
        if not records:
            logger.warning("COCO annotation file %s: the dataset is empty (%d images in the file, %d removed by "
                           "filter_empty)", path, len(images), n_empty)
        return records

    def __repr__(self) -> str:
        return (f"COCODetection(ann_file={self.ann_file!r}, image_dir={self.image_dir!r}, images={len(self)}, "
                f"classes={len(self.class_names)}, filter_empty={self.filter_empty}, "
                f"input_format={self.input_format!r})")
