"""Detections matched to the ground truth image by image: the matching of TIDE and of the confusion matrix.

:func:`group_by_image` turns a COCO ground-truth dict and a COCO results list into one :class:`ImageBoxes` per
ground-truth image (boxes ``[x, y, w, h]`` in pixels, COCO category ids). :func:`match_image` then matches one
image greedily, as ``tidecv`` (``TIDEExample._run``) and pycocotools do: detections in descending score order,
each takes the still-unmatched gt of its class with the highest IoU if that IoU is >= ``pos_thresh``. Unmatched
detections inside a crowd region of their class (intersection over the detection's area > ``pos_thresh``) are
ignored, not false positives. Pass ``class_agnostic=True`` to match boxes whatever their classes (the
confusion matrix).

IoUs are pycocotools' (``pycocotools.mask.iou``), the function COCOeval and tidecv call. The greedy loop is the
one sequential step (a match removes a gt for every later detection); it visits only the detections that
can match at all.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils

__all__ = ["ImageBoxes", "ImageMatch", "box_iou_xywh", "group_by_image", "match_image"]


@dataclass
class ImageBoxes:
    """The ground truth and the detections of one image (``G`` non-crowd gt, ``C`` crowd regions, ``D``
    detections sorted by descending score, at most ``max_dets``)."""

    image_id: int
    file_name: str
    gt_boxes: np.ndarray  # (G, 4) xywh
    gt_labels: np.ndarray  # (G,) category ids
    crowd_boxes: np.ndarray  # (C, 4) xywh
    crowd_labels: np.ndarray  # (C,)
    det_boxes: np.ndarray  # (D, 4) xywh
    det_labels: np.ndarray  # (D,)
    det_scores: np.ndarray  # (D,)

    def keep_detections(self, keep: np.ndarray) -> "ImageBoxes":
        """The same image with only the detections where ``keep`` (a (D,) bool mask) is true."""
        return ImageBoxes(self.image_id, self.file_name, self.gt_boxes, self.gt_labels, self.crowd_boxes,
                          self.crowd_labels, self.det_boxes[keep], self.det_labels[keep], self.det_scores[keep])


@dataclass
class ImageMatch:
    """The result of :func:`match_image`: arrays over the image's detections (D) and non-crowd gt (G)."""

    det_gt: np.ndarray  # (D,) index of the matched gt, -1 when unmatched
    det_ignored: np.ndarray  # (D,) bool: unmatched but inside a crowd region of its class
    iou: np.ndarray  # (D, G) IoU of every detection with every non-crowd gt

    @property
    def det_tp(self) -> np.ndarray:
        return self.det_gt >= 0

    @property
    def gt_matched(self) -> np.ndarray:
        """(G,) bool: the gt has a matched detection."""
        matched = np.zeros(self.iou.shape[1], bool)
        matched[self.det_gt[self.det_gt >= 0]] = True
        return matched


def _boxes(rows: list, n: int = 4) -> np.ndarray:
    return np.asarray(rows, dtype=np.float64).reshape(-1, n)


def group_by_image(gt: dict, dets: list[dict], *, max_dets: int = 100) -> list[ImageBoxes]:
    """One :class:`ImageBoxes` per image of ``gt["images"]``, in that order.

    ``gt``: a COCO instances dict; ``dets``: COCO results (``image_id``, ``category_id``, ``bbox`` xywh,
    ``score``), validated. Detections of an image are sorted by descending score (stably: ties keep the order
    of ``dets``) and cut to the ``max_dets`` best, over all classes together (as tidecv does).
    """
    anns, crowd, found = defaultdict(list), defaultdict(list), defaultdict(list)
    for a in gt.get("annotations", []):
        (crowd if a.get("iscrowd", 0) else anns)[a["image_id"]].append(a)
    for d in dets:
        found[d["image_id"]].append(d)
    out = []
    for im in gt.get("images", []):
        i = im["id"]
        ds = sorted(found.get(i, []), key=lambda d: -d["score"])[:max_dets]  # sorted() is stable
        out.append(ImageBoxes(
            image_id=i, file_name=str(im.get("file_name", "")),
            gt_boxes=_boxes([a["bbox"] for a in anns.get(i, [])]),
            gt_labels=np.asarray([a["category_id"] for a in anns.get(i, [])], dtype=np.int64),
            crowd_boxes=_boxes([a["bbox"] for a in crowd.get(i, [])]),
            crowd_labels=np.asarray([a["category_id"] for a in crowd.get(i, [])], dtype=np.int64),
            det_boxes=_boxes([d["bbox"] for d in ds]),
            det_labels=np.asarray([d["category_id"] for d in ds], dtype=np.int64),
            det_scores=np.asarray([d["score"] for d in ds], dtype=np.float64),
        ))
    return out


def box_iou_xywh(dets: np.ndarray, gts: np.ndarray, *, crowd: bool = False) -> np.ndarray:
    """(D, G) IoU of ``[x, y, w, h]`` boxes (pycocotools'); with ``crowd`` the intersection over the
    detection's area, COCO's overlap with a crowd region."""
    if len(dets) == 0 or len(gts) == 0:
        return np.zeros((len(dets), len(gts)))
    iou = mask_utils.iou(np.ascontiguousarray(dets, np.float64), np.ascontiguousarray(gts, np.float64),
                         [int(crowd)] * len(gts))
    return np.asarray(iou, dtype=np.float64).reshape(len(dets), len(gts))


def _greedy(iou_same: np.ndarray, pos_thresh: float) -> np.ndarray:
    """(D,) matched gt index per detection (-1: none): detections in row order, each takes its best free gt."""
    det_gt = np.full(iou_same.shape[0], -1, dtype=np.int64)
    if iou_same.shape[1] == 0:
        return det_gt
    free = iou_same.copy()
    for i in np.flatnonzero(iou_same.max(axis=1) >= pos_thresh):  # the others can never match
        j = int(free[i].argmax())
        if free[i, j] >= pos_thresh:
            det_gt[i] = j
            free[:, j] = 0.0
    return det_gt


def match_image(image: ImageBoxes, *, pos_thresh: float = 0.5, class_agnostic: bool = False) -> ImageMatch:
    """Greedy matching of ``image``'s detections (already in descending score order) to its gt."""
    iou = box_iou_xywh(image.det_boxes, image.gt_boxes)
    same = np.ones(iou.shape, bool) if class_agnostic else image.det_labels[:, None] == image.gt_labels[None, :]
    det_gt = _greedy(iou * same, pos_thresh)
    in_crowd = box_iou_xywh(image.det_boxes, image.crowd_boxes, crowd=True) > pos_thresh
    if not class_agnostic:
        in_crowd &= image.det_labels[:, None] == image.crowd_labels[None, :]
    return ImageMatch(det_gt=det_gt, det_ignored=(det_gt < 0) & in_crowd.any(axis=1), iou=iou)
