"""TIDE: the AP50 points that fixing each kind of detection error would recover.

Bolya, Foley, Hays, Hoffman, "TIDE: A General Toolbox for Identifying Object Detection Errors", ECCV 2020.
The definitions are those of the authors' package ``tidecv`` 1.0.1 (``quantify.py``, ``errors/main_errors.py``,
``errors/error.py``, ``ap.py``), which this module follows rule for rule so that its numbers agree with it
(``tests/fixtures/tidecv`` holds tidecv's own numbers on perturbed detections). tidecv is not a dependency:
it pulls ``opencv-python`` (which clashes with ``opencv-python-headless``), pandas and seaborn, and imports pyplot.

Matching (:mod:`evaluation.matching`): per image, the 100 best detections in descending score; a detection
is a true positive if it takes a free gt of its class at IoU >= ``pos_thresh`` (0.5). Every other detection
is an error of the first type whose test it passes, in this order (IoU with the non-crowd gt):

* ``Loc``  -- its best IoU with a gt of its class is in [``bg_thresh``, ``pos_thresh``];
* ``Cls``  -- IoU >= ``pos_thresh`` with a gt of another class;
* ``Dupe`` -- IoU >= ``pos_thresh`` with a gt of its class already taken by a higher-scored detection;
* ``Bkg``  -- IoU <= ``bg_thresh`` with every gt;
* ``Both`` -- anything else (wrong class and poorly localised).

A gt left unmatched is a ``Miss`` unless a ``Cls`` or ``Loc`` error points at it. The dAP of a type is the
AP50 after fixing all errors of that type minus the AP50 before, clipped at 0 (AP points, 0-100):

* ``Cls`` / ``Loc``: the error becomes a true positive of the gt's class / its own class, if its gt is free
  and it is the highest-scored ``Cls`` or ``Loc`` error on that gt; the other errors on the gt are removed;
* ``Dupe``, ``Bkg``, ``Both``: the detection is removed;
* ``Miss``: the gt is removed.

The special errors are not clipped: ``FalsePos`` scores every true positive 1 and every false positive 0
(perfect precision at the same recall); ``FalseNeg`` removes every unmatched gt (perfect recall).

AP50 here is tidecv's: the mean over every class with a gt *or a detection* (a class detected but absent from
the gt counts with AP 0, where pycocotools leaves it out), 101-point interpolated as COCO. Detections inside a
crowd region of their class are ignored in the AP but still classified (and may be fixed), as in tidecv.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from evaluation.matching import ImageBoxes, match_image

__all__ = ["ERROR_TYPES", "SPECIAL_ERROR_TYPES", "TideResult", "tide_errors", "classify_errors", "group_ap",
           "format_table"]

ERROR_TYPES: tuple[str, ...] = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")  # tidecv's order
SPECIAL_ERROR_TYPES: tuple[str, ...] = ("FalsePos", "FalseNeg")
CLS, LOC, BOTH, DUPE, BKG, MISS = range(len(ERROR_TYPES))


@dataclass
class TideResult:
    """What :func:`tide_errors` finds, over all images."""

    ap50: float  # tidecv's AP at pos_thresh, in AP points (0-100)
    dap: dict[str, float]  # ERROR_TYPES + SPECIAL_ERROR_TYPES -> AP points recovered by fixing them
    counts: dict[str, int]  # ERROR_TYPES -> number of errors
    image_ap50: dict[int, float] = field(repr=False)  # image id -> AP50 of that image alone (images with gt)
    pos_thresh: float = 0.5
    bg_thresh: float = 0.1


def classify_errors(image: ImageBoxes, det_gt: np.ndarray, *, pos_thresh: float = 0.5,
                    bg_thresh: float = 0.1, iou: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The error type of each detection of ``image`` that is not a true positive (tidecv's tests, in order).

    ``det_gt``: (D,) matched gt index or -1 (:class:`evaluation.matching.ImageMatch`). Returns ``(error,
    target)``, both (D,) int64: the index into :data:`ERROR_TYPES` (-1 for a true positive) and, for ``Cls``
    and ``Loc``, the gt the error points at (-1 otherwise).
    """
    D, G = len(det_gt), len(image.gt_boxes)
    error, target = np.full(D, -1, np.int64), np.full(D, -1, np.int64)
    wrong = det_gt < 0
    if G == 0:
        error[wrong] = BKG
        return error, target
    if iou is None:
        iou = match_image(image, pos_thresh=pos_thresh).iou
    same = image.det_labels[:, None] == image.gt_labels[None, :]
    taken = np.zeros(G, bool)
    taken[det_gt[det_gt >= 0]] = True
    iou_same, iou_other = iou * same, iou * ~same
    loc = wrong & (iou_same.max(1) >= bg_thresh) & (iou_same.max(1) <= pos_thresh)
    cls = wrong & ~loc & (iou_other.max(1) >= pos_thresh)
    dupe = wrong & ~loc & ~cls & ((iou_same * taken).max(1) >= pos_thresh)
    bkg = wrong & ~(loc | cls | dupe) & (iou.max(1) <= bg_thresh)
    for kind, mask in ((LOC, loc), (CLS, cls), (DUPE, dupe), (BKG, bkg)):
        error[mask] = kind
    error[wrong & (error < 0)] = BOTH
    target[loc] = iou_same.argmax(1)[loc]
    target[cls] = iou_other.argmax(1)[cls]
    return error, target


@dataclass
class _Detections:
    """Every kept detection of every image, in tidecv's push order (image by image, descending score)."""

    label: np.ndarray
    score: np.ndarray
    tp: np.ndarray  # matched
    ignored: np.ndarray  # unmatched inside a crowd region: not in the AP
    error: np.ndarray  # index into ERROR_TYPES, -1 for a true positive
    target: np.ndarray  # global gt index of a Cls / Loc error, else -1
    image: np.ndarray  # index of the image


@dataclass
class _GroundTruth:
    label: np.ndarray  # every non-crowd gt
    matched: np.ndarray
    image: np.ndarray


_DET_FIELDS = {"label": np.int64, "score": np.float64, "tp": bool, "ignored": bool, "error": np.int64,
               "target": np.int64, "image": np.int64}
_GT_FIELDS = {"label": np.int64, "matched": bool, "image": np.int64}


def _concat(parts: list[dict], fields: dict) -> dict:
    """The per-image arrays of ``parts`` joined, field by field, with the dtypes of ``fields``."""
    return {k: np.concatenate([p[k] for p in parts] + [np.zeros(0, t)]).astype(t) for k, t in fields.items()}


def _collect(images: list[ImageBoxes], pos_thresh: float, bg_thresh: float) -> tuple[_Detections, _GroundTruth]:
    """Every image matched and its errors classified; the detections and the gt of all images, joined."""
    det_parts, gt_parts, offset = [], [], 0
    for k, im in enumerate(images):
        m = match_image(im, pos_thresh=pos_thresh)
        error, target = classify_errors(im, m.det_gt, pos_thresh=pos_thresh, bg_thresh=bg_thresh, iou=m.iou)
        det_parts.append({"label": im.det_labels, "score": im.det_scores, "tp": m.det_tp, "ignored": m.det_ignored,
                          "error": error, "target": np.where(target >= 0, target + offset, -1),
                          "image": np.full(len(error), k)})
        gt_parts.append({"label": im.gt_labels, "matched": m.gt_matched, "image": np.full(len(im.gt_labels), k)})
        offset += len(im.gt_labels)
    return _Detections(**_concat(det_parts, _DET_FIELDS)), _GroundTruth(**_concat(gt_parts, _GT_FIELDS))


def group_ap(groups: np.ndarray, scores: np.ndarray, tps: np.ndarray, num_gt: np.ndarray) -> np.ndarray:
    """101-point interpolated AP (0-1) of each group, all groups at once (tidecv's ``APDataObject.get_ap``).

    ``groups`` (N,) ints in [0, n) of N scored points, ``tps`` (N,) bool, ``num_gt`` (n,) gt count per group.
    Points are ranked by descending score within a group, ties in input order. The precision envelope is
    sampled at the first point whose recall reaches each of 0, 0.01, ..., 1 (compared exactly, in integers, as
    tidecv's ``i / 100``; pycocotools' ``np.linspace`` thresholds differ from them in the last bit at 10 of
    the 101). A group without gt has AP 0.
    """
    n, N = len(num_gt), len(groups)
    if N == 0:
        return np.zeros(n)
    order = np.argsort(-scores, kind="stable")
    order = order[np.argsort(groups[order], kind="stable")]
    g, t = groups[order], tps[order].astype(np.int64)
    start = np.searchsorted(g, np.arange(n + 1))  # group k holds the points start[k]:start[k+1]
    cum = np.cumsum(t)
    tp_cum = cum - np.concatenate([[0], cum])[start[:-1]][g]  # true positives up to each point, in its group
    precision = tp_cum / (np.arange(N) - start[:-1][g] + 1)
    # the envelope (best precision at this rank or later) within each group: the offsets keep groups apart
    envelope = np.maximum.accumulate((precision - 2.0 * g)[::-1])[::-1] + 2.0 * g
    # recall >= i/100  <=>  tp_cum >= ceil(i * num_gt / 100); the offsets (N + 1) * group keep groups sorted
    need = -(-np.arange(101)[None, :] * num_gt[:, None] // 100)  # (n, 101)
    offset = (N + 1) * np.arange(n)[:, None]
    idx = np.searchsorted(tp_cum + (N + 1) * g, need + offset, side="left")
    sampled = np.where(idx < start[1:, None], envelope[np.minimum(idx, N - 1)], 0.0)
    return np.where(num_gt > 0, sampled.mean(axis=1), 0.0)


def _mean_ap(labels, scores, tps, num_gt: dict[int, int], classes: np.ndarray) -> float:
    """tidecv's mAP in AP points: mean AP over ``classes`` with a point or a gt."""
    if len(classes) == 0:
        return 0.0
    k = np.searchsorted(classes, labels)
    counts = np.array([num_gt.get(int(c), 0) for c in classes])
    ap = group_ap(k, scores, tps, counts)
    used = (counts > 0) | (np.bincount(k, minlength=len(classes)) > 0)
    return float(100.0 * ap[used].mean()) if used.any() else 0.0


def _fixable(dets: _Detections, gt: _GroundTruth) -> tuple[np.ndarray, np.ndarray]:
    """(D,) whether each Cls / Loc error becomes a true positive when fixed (tidecv's ``BestGTMatch``: its gt is
    free and it is the first -- highest-scored -- such error on it), and (G,) which gt such errors point at."""
    candidates = np.flatnonzero((dets.error == CLS) | (dets.error == LOC))
    candidates = candidates[~gt.matched[dets.target[candidates]]]
    usable = np.zeros(len(gt.label), bool)
    usable[dets.target[candidates]] = True
    _, first = np.unique(dets.target[candidates], return_index=True)
    fixable = np.zeros(len(dets.label), bool)
    fixable[candidates[first]] = True
    return fixable, usable


def _fixed_map(dets: _Detections, gt: _GroundTruth, classes, base_gt: dict, kind: int, fixable, miss) -> float:
    """mAP with every error of type ``kind`` fixed, points in tidecv's order after a fix: the errors' points
    first, then the true positives (the order decides between tied scores)."""
    err = ~dets.tp
    label, score, keep = dets.label[err].copy(), dets.score[err], ~dets.ignored[err]
    tp = np.zeros(int(err.sum()), bool)
    num_gt = dict(base_gt)
    if kind in (CLS, LOC):
        this = dets.error[err] == kind
        tp[this], keep[this] = fixable[err][this], fixable[err][this]
        if kind == CLS:
            label[this & tp] = gt.label[dets.target[err][this & tp]]
    elif kind == MISS:
        for c, n in zip(*np.unique(gt.label[miss], return_counts=True)):
            num_gt[int(c)] -= int(n)
    else:  # Dupe, Bkg, Both: the detections go
        keep &= dets.error[err] != kind
    label = np.concatenate([label[keep], dets.label[dets.tp]])
    score = np.concatenate([score[keep], dets.score[dets.tp]])
    tp = np.concatenate([tp[keep], np.ones(int(dets.tp.sum()), bool)])
    return _mean_ap(label, score, tp, num_gt, classes)


def _special(dets: _Detections, gt: _GroundTruth, classes, base_gt: dict) -> dict[str, float]:
    """AP after perfect precision (FalsePos) and after perfect recall (FalseNeg), points in the fixed order."""
    err = ~dets.tp & ~dets.ignored
    label = np.concatenate([dets.label[err], dets.label[dets.tp]])
    tp = np.concatenate([np.zeros(int(err.sum()), bool), np.ones(int(dets.tp.sum()), bool)])
    score = np.concatenate([dets.score[err], dets.score[dets.tp]])
    false_pos = _mean_ap(label, tp.astype(np.float64), tp, base_gt, classes)
    num_tp = dict(base_gt)
    for c, n in zip(*np.unique(gt.label[~gt.matched], return_counts=True)):
        num_tp[int(c)] -= int(n)
    false_neg = _mean_ap(label, score, tp, num_tp, classes)
    return {"FalsePos": false_pos, "FalseNeg": false_neg}


def _per_image(dets: _Detections, gt: _GroundTruth, images: list[ImageBoxes]) -> dict[int, float]:
    """Image id -> AP50 of the image alone: the mean over the classes with a gt in it (COCO's rule; tidecv's
    rule, which also counts every class detected there, would count most classes of one image as AP 0)."""
    key_gt, num_gt = np.unique(gt.image * (1 << 32) + gt.label, return_counts=True)  # (image, class) pairs
    kept = ~dets.ignored
    key_det = dets.image[kept] * (1 << 32) + dets.label[kept]
    has_gt = np.isin(key_det, key_gt)
    ap = group_ap(np.searchsorted(key_gt, key_det[has_gt]), dets.score[kept][has_gt], dets.tp[kept][has_gt], num_gt)
    image_of_key = key_gt >> 32
    sums = np.bincount(image_of_key, weights=ap, minlength=len(images))
    n = np.bincount(image_of_key, minlength=len(images))
    return {im.image_id: float(100 * sums[k] / n[k]) for k, im in enumerate(images) if n[k]}


def tide_errors(images: list[ImageBoxes], *, pos_thresh: float = 0.5, bg_thresh: float = 0.1) -> TideResult:
    """The TIDE breakdown of the detections in ``images`` (:func:`evaluation.matching.group_by_image`)."""
    dets, gt = _collect(images, pos_thresh, bg_thresh)
    pushed = ~dets.ignored
    classes = np.unique(np.concatenate([gt.label, dets.label[pushed]]))
    base_gt = {int(c): int(n) for c, n in zip(*np.unique(gt.label, return_counts=True))}
    base = _mean_ap(dets.label[pushed], dets.score[pushed], dets.tp[pushed], base_gt, classes)
    fixable, usable = _fixable(dets, gt)
    miss = ~gt.matched & ~usable
    dap = {name: max(_fixed_map(dets, gt, classes, base_gt, kind, fixable, miss) - base, 0.0)
           for kind, name in enumerate(ERROR_TYPES)}
    dap.update({k: v - base for k, v in _special(dets, gt, classes, base_gt).items()})
    counts = {name: int((dets.error == kind).sum()) for kind, name in enumerate(ERROR_TYPES)}
    counts["Miss"] = int(miss.sum())
    return TideResult(ap50=base, dap=dap, counts=counts, image_ap50=_per_image(dets, gt, images),
                      pos_thresh=pos_thresh, bg_thresh=bg_thresh)


def format_table(result: TideResult) -> str:
    """The breakdown as an aligned text table (dAP in AP50 points, and the number of errors of each type)."""
    names = ERROR_TYPES + SPECIAL_ERROR_TYPES
    w = max(len(n) for n in names) + 2
    head = f"TIDE errors: AP50 {result.ap50:.2f} (IoU >= {result.pos_thresh:g} is a hit, <= {result.bg_thresh:g} " \
           f"background); dAP = AP50 points recovered by fixing each type"
    why = ("AP50 is TIDE's own (tidecv's): a class detected but absent from the ground truth counts with AP 0, "
           "and 100 detections an image over all classes; COCO's leaves such classes out, 100 an image and class")
    lines = [head, why, f"{'type':<6}" + "".join(f"{n:>{w}}" for n in names),
             f"{'dAP':<6}" + "".join(f"{result.dap[n]:>{w}.2f}" for n in names),
             f"{'count':<6}" + "".join(f"{result.counts[n]:>{w}d}" for n in ERROR_TYPES)]
    return "\n".join(lines)
