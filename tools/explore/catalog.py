"""What the explorer shows: a split's images, their ground truth, and each run's detections with their TIDE types.

A :class:`Catalog` is built once from a COCO ground-truth dict and one or two COCO results lists (what
``eval.py --save_results`` writes). Each run is matched image by image with :func:`evaluation.matching.match_image`
and every detection that is not a true positive gets its TIDE error type from
:func:`evaluation.tide.classify_errors`; :func:`evaluation.tide.tide_errors` gives the run's breakdown and each
image's own AP50. The 100 best detections per image are kept, as COCO and tidecv keep them.

Everything the page filters or sorts by is computed for a score threshold ``thr`` from per-detection arrays,
without matching again: greedy matching in descending score gives the detections scoring >= ``thr`` the same
matches and types whatever scores below, so a detection's type is fixed, and an object is a ``Miss`` at ``thr``
when neither its true positive nor a ``Cls`` / ``Loc`` error pointing at it scores >= ``thr`` (TIDE's rule for
the thresholded detections). Per-image AP50 integrates over every threshold and does not depend on ``thr``.

With two runs A and B, an object B *fixes* is one that B detects (a true positive at ``thr``) and A does not;
one it *breaks*, the reverse; ``diff`` is B's errors minus A's (negative: B is better on the image).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from evaluation.matching import group_by_image, match_image
from evaluation.tide import ERROR_TYPES, TideResult, classify_errors, tide_errors

__all__ = ["Catalog", "Run", "SORT_KEYS", "ERROR_TYPES", "MAX_DETS"]

logger = logging.getLogger(__name__)

MAX_DETS = 100  # detections per image, as COCO's and tidecv's maxDets
MISS = ERROR_TYPES.index("Miss")
# what the grid sorts by: the error count, each TIDE type, the image's AP50, its file name, and with two runs the
# difference B - A in errors and the objects B fixes and breaks
SORT_KEYS = ("errors", *ERROR_TYPES, "ap", "name", "diff", "fixed", "broken")


@dataclass
class Run:
    """One results file matched to the ground truth: flat arrays over its detections, grouped by image (in the
    catalog's image order) and by descending score within an image; ``gt_*`` arrays over the catalog's gt."""

    name: str
    path: str
    tide: TideResult
    det_start: np.ndarray  # (N + 1,) image k holds the detections det_start[k]:det_start[k + 1]
    det_image: np.ndarray  # (D,) image index
    det_box: np.ndarray  # (D, 4) xywh
    det_cat: np.ndarray  # (D,) category id
    det_score: np.ndarray  # (D,)
    det_type: np.ndarray  # (D,) index into ERROR_TYPES, -1 for a true positive
    det_gt: np.ndarray  # (D,) global index of the matched gt (true positive), else -1
    det_target: np.ndarray  # (D,) global index of the gt a Cls / Loc error points at, else -1
    det_iou: np.ndarray  # (D,) best IoU with any non-crowd gt of the image (0 without gt)
    det_iou_gt: np.ndarray  # (D,) global index of that gt, else -1
    det_ignored: np.ndarray  # (D,) unmatched inside a crowd region of its class: not in the AP
    gt_hit_score: np.ndarray  # (G,) score of the true positive on the gt, -inf when none
    gt_target_score: np.ndarray  # (G,) best score of a Cls / Loc error pointing at the gt, -inf when none


def _boxes_of(images, field: str) -> tuple[np.ndarray, np.ndarray]:
    """(start (N + 1,), image index (n,)) of the per-image arrays ``field`` of ``images``, joined."""
    sizes = np.array([len(getattr(im, field)) for im in images], np.int64)
    return np.concatenate([[0], np.cumsum(sizes)]), np.repeat(np.arange(len(images)), sizes)


def _match_run(images, gt_start: np.ndarray, name: str, path: str) -> Run:
    """The per-detection TIDE data of one run (``images``: :func:`group_by_image` of its detections)."""
    parts = []
    num_gt = int(gt_start[-1])
    hit, target_score = np.full(num_gt, -np.inf), np.full(num_gt, -np.inf)
    for k, im in enumerate(images):
        m = match_image(im)
        error, target = classify_errors(im, m.det_gt, iou=m.iou)
        off = gt_start[k]
        has_gt = m.iou.shape[1] > 0
        best = m.iou.argmax(1) if has_gt else np.full(len(error), -1)
        parts.append((np.where(m.det_gt >= 0, m.det_gt + off, -1), np.where(target >= 0, target + off, -1),
                      error, m.iou.max(1) if has_gt else np.zeros(len(error)), np.where(best >= 0, best + off, -1),
                      m.det_ignored))
        tp = m.det_gt >= 0
        hit[m.det_gt[tp] + off] = im.det_scores[tp]
        points = target >= 0  # descending scores: the first write of a gt is its best, so write in reverse
        target_score[target[points][::-1] + off] = im.det_scores[points][::-1]
    start, image = _boxes_of(images, "det_scores")

    def cat(i, dtype):
        return np.concatenate([p[i] for p in parts] + [np.zeros(0, dtype)]).astype(dtype)

    return Run(name=name, path=path, tide=tide_errors(images), det_start=start, det_image=image,
               det_box=np.concatenate([im.det_boxes for im in images] + [np.zeros((0, 4))]),
               det_cat=np.concatenate([im.det_labels for im in images] + [np.zeros(0, np.int64)]),
               det_score=np.concatenate([im.det_scores for im in images] + [np.zeros(0)]),
               det_gt=cat(0, np.int64), det_target=cat(1, np.int64), det_type=cat(2, np.int64),
               det_iou=cat(3, np.float64), det_iou_gt=cat(4, np.int64), det_ignored=cat(5, bool),
               gt_hit_score=hit, gt_target_score=target_score)


def safe_image_path(image_dir: Path, file_name: str) -> Optional[Path]:
    """``image_dir / file_name`` when it stays inside ``image_dir`` once ``..`` are resolved (symbolic links inside
    the folder are the user's and are followed), else None: a gt entry never reaches outside the folder."""
    base = os.path.normpath(os.path.abspath(image_dir))
    path = os.path.normpath(os.path.join(base, file_name))
    return Path(path) if path.startswith(base + os.sep) else None


class Catalog:
    """A split's images with the ground truth and the runs, and the views of them the page asks for."""

    def __init__(self, gt: dict, runs: list[tuple[str, str, list[dict]]], image_dir: Optional[Path]):
        """``gt``: a COCO instances dict; ``runs``: (name, path, validated COCO results) of one or two runs;
        ``image_dir``: the folder the gt's ``file_name`` entries are relative to (None: no pictures)."""
        self.categories = {int(c["id"]): str(c.get("name", c["id"])) for c in gt.get("categories", [])}
        grouped = [group_by_image(gt, dets, max_dets=MAX_DETS) for _, _, dets in runs]
        base = grouped[0]
        self.images = [{"id": int(im["id"]), "file_name": str(im.get("file_name", "")),
                        "width": int(im.get("width") or 0), "height": int(im.get("height") or 0)}
                       for im in gt.get("images", [])]
        self.index = {im["id"]: k for k, im in enumerate(self.images)}
        self.gt_start, self.gt_image = _boxes_of(base, "gt_labels")
        self.gt_box = np.concatenate([im.gt_boxes for im in base] + [np.zeros((0, 4))])
        self.gt_cat = np.concatenate([im.gt_labels for im in base] + [np.zeros(0, np.int64)])
        self.crowd_start, _ = _boxes_of(base, "crowd_labels")
        self.crowd_box = np.concatenate([im.crowd_boxes for im in base] + [np.zeros((0, 4))])
        self.crowd_cat = np.concatenate([im.crowd_labels for im in base] + [np.zeros(0, np.int64)])
        self.runs = [_match_run(images, self.gt_start, name, path) for (name, path, _), images in zip(runs, grouped)]
        self.image_dir = image_dir
        self.paths = self._image_paths(image_dir)
        self.names = np.array([im["file_name"] for im in self.images])

    def _image_paths(self, image_dir: Optional[Path]) -> list[Optional[Path]]:
        """Each image's file (None: no folder, outside the folder, or missing), with one log line per problem."""
        if image_dir is None:
            return [None] * len(self.images)
        paths = [safe_image_path(image_dir, im["file_name"]) for im in self.images]
        outside = [im["file_name"] for im, p in zip(self.images, paths) if p is None]
        if outside:
            logger.warning("%d image entries point outside %s and are not served (first: %s)", len(outside),
                           image_dir, outside[0])
        missing = [str(p) for p in paths if p is not None and not p.is_file()]
        if missing:
            logger.warning("%d of %d images are missing from %s (first: %s): they are listed without pictures",
                           len(missing), len(paths), image_dir, missing[0])
        return [p if p is not None and p.is_file() else None for p in paths]

    # ------------------------------------------------------------------ per-image numbers at a score threshold
    def counts(self, run: int, thr: float) -> np.ndarray:
        """(N, 6) errors of each TIDE type per image among the detections scoring >= ``thr``."""
        r, n = self.runs[run], len(self.images)
        kept = (r.det_score >= thr) & (r.det_type >= 0)
        out = np.bincount(r.det_image[kept] * len(ERROR_TYPES) + r.det_type[kept],
                          minlength=n * len(ERROR_TYPES)).reshape(n, len(ERROR_TYPES))
        out[:, MISS] = np.bincount(self.gt_image[~self._found(r, thr)], minlength=n)
        return out

    @staticmethod
    def _found(r: Run, thr: float) -> np.ndarray:
        """(G,) the gt has a true positive or a Cls / Loc error pointing at it among the detections >= ``thr``."""
        return (r.gt_hit_score >= thr) | (r.gt_target_score >= thr)

    def fixed_broken(self, thr: float) -> tuple[np.ndarray, np.ndarray]:
        """(N,) objects run B detects and A misses (fixed), and the reverse (broken), at ``thr``; zeros with one run."""
        n = len(self.images)
        if len(self.runs) < 2:
            return np.zeros(n, np.int64), np.zeros(n, np.int64)
        a, b = (r.gt_hit_score >= thr for r in self.runs[:2])
        return np.bincount(self.gt_image[b & ~a], minlength=n), np.bincount(self.gt_image[a & ~b], minlength=n)

    def image_ap(self, run: int) -> np.ndarray:
        """(N,) each image's own AP50 (the classes with a gt in it, :func:`evaluation.tide.tide_errors`); NaN for
        an image without gt."""
        ap = self.runs[run].tide.image_ap50
        return np.array([ap.get(im["id"], np.nan) for im in self.images])

    def order(self, *, sort: str = "errors", desc: bool = True, run: int = 0, thr: float = 0.0,
              cls: Optional[int] = None, err: Optional[str] = None) -> np.ndarray:
        """Indices of the images to show: those with a gt or a detection (>= ``thr``, any run) of class ``cls``
        and with an error of type ``err`` in ``run``, sorted by ``sort`` (ties by file name, NaN AP last)."""
        keep = np.ones(len(self.images), bool)
        if cls is not None:
            has = np.bincount(self.gt_image[self.gt_cat == cls], minlength=len(keep)) > 0
            for r in self.runs:
                has |= np.bincount(r.det_image[(r.det_cat == cls) & (r.det_score >= thr)], minlength=len(keep)) > 0
            keep &= has
        counts = self.counts(run, thr)
        if err is not None:
            keep &= counts[:, ERROR_TYPES.index(err)] > 0
        idx = np.flatnonzero(keep)
        if sort == "name":
            order = np.argsort(self.names[idx], kind="stable")
            return idx[order[::-1] if desc else order]
        if sort == "ap":
            key = self.image_ap(run)
        elif sort in ERROR_TYPES:
            key = counts[:, ERROR_TYPES.index(sort)].astype(np.float64)
        elif sort == "errors":
            key = counts.sum(1).astype(np.float64)
        else:  # diff, fixed, broken
            fixed, broken = self.fixed_broken(thr)
            key = {"fixed": fixed, "broken": broken, "diff": self.diff(thr)}[sort].astype(np.float64)
        key, names = key[idx], self.names[idx]
        nan = np.isnan(key)
        key = np.where(nan, 0.0, -key if desc else key)
        order = np.lexsort((names, key, nan))  # the last key sorts first: NaN AP last, then the key, then the name
        return idx[order]

    def diff(self, thr: float) -> np.ndarray:
        """(N,) run B's errors minus run A's at ``thr`` (zeros with one run)."""
        if len(self.runs) < 2:
            return np.zeros(len(self.images), np.int64)
        return self.counts(1, thr).sum(1) - self.counts(0, thr).sum(1)

    # ------------------------------------------------------------------ what the page gets
    def summary(self) -> dict:
        """The runs' TIDE breakdowns (all detections, as ``tools.analyze_errors`` writes them)."""
        return {"runs": [{"name": r.name, "path": r.path, "AP50": r.tide.ap50, "dAP": r.tide.dap,
                          "counts": r.tide.counts, "detections": int(len(r.det_score))} for r in self.runs],
                "categories": [{"id": k, "name": v} for k, v in self.categories.items()],
                "error_types": list(ERROR_TYPES), "num_images": len(self.images), "max_dets": MAX_DETS}

    def _gt_rows(self, k: int) -> list:
        s, e = self.gt_start[k], self.gt_start[k + 1]
        return [[*np.round(b, 2).tolist(), int(c)] for b, c in zip(self.gt_box[s:e], self.gt_cat[s:e])]

    def _crowd_rows(self, k: int) -> list:
        s, e = self.crowd_start[k], self.crowd_start[k + 1]
        return [[*np.round(b, 2).tolist(), int(c)] for b, c in zip(self.crowd_box[s:e], self.crowd_cat[s:e])]

    def page(self, order: np.ndarray, offset: int, limit: int, *, run: int, thr: float) -> list[dict]:
        """The grid's cards for ``order[offset:offset + limit]``: numbers and the boxes to draw on the thumbnail
        (gt ``[x, y, w, h, cat]``; the run's detections >= ``thr`` ``[x, y, w, h, cat, score, type]``)."""
        counts = [self.counts(i, thr) for i in range(len(self.runs))]
        aps = [self.image_ap(i) for i in range(len(self.runs))]
        fixed, broken = self.fixed_broken(thr)
        r = self.runs[run]
        out = []
        for k in order[offset:offset + limit].tolist():
            s, e = r.det_start[k], r.det_start[k + 1]
            shown = np.flatnonzero(r.det_score[s:e] >= thr) + s
            out.append({**self.images[k], "has_image": self.paths[k] is not None,
                        "counts": [dict(zip(ERROR_TYPES, c[k].tolist())) for c in counts],
                        "errors": [int(c[k].sum()) for c in counts],
                        "ap": [None if np.isnan(a[k]) else round(float(a[k]), 2) for a in aps],
                        "fixed": int(fixed[k]), "broken": int(broken[k]),
                        "gt": self._gt_rows(k), "crowd": self._crowd_rows(k),
                        "dets": [[*np.round(r.det_box[i], 2).tolist(), int(r.det_cat[i]),
                                  round(float(r.det_score[i]), 4), int(r.det_type[i])] for i in shown]})
        return out

    def image(self, k: int) -> dict:
        """Everything about image ``k`` for the one-image view, every detection (the page applies the threshold):
        per run, detections ``{box, cat, score, type, gt, target, iou, iou_gt, ignored}`` (gt indices local to the
        image) and per gt the score of its true positive and of the best Cls / Loc error on it (None: none)."""
        g0 = int(self.gt_start[k])

        def local(i):
            return int(i) - g0 if i >= 0 else -1

        def score(v):
            return None if np.isinf(v) else round(float(v), 6)

        runs = []
        for r in self.runs:
            s, e = r.det_start[k], r.det_start[k + 1]
            ap = r.tide.image_ap50.get(self.images[k]["id"])
            runs.append({
                "dets": [{"box": np.round(r.det_box[i], 2).tolist(), "cat": int(r.det_cat[i]),
                          "score": round(float(r.det_score[i]), 6), "type": int(r.det_type[i]),
                          "gt": local(r.det_gt[i]), "target": local(r.det_target[i]),
                          "iou": round(float(r.det_iou[i]), 4), "iou_gt": local(r.det_iou_gt[i]),
                          "ignored": bool(r.det_ignored[i])} for i in range(s, e)],
                "gt_hit": [score(v) for v in r.gt_hit_score[g0:self.gt_start[k + 1]]],
                "gt_target": [score(v) for v in r.gt_target_score[g0:self.gt_start[k + 1]]],
                "ap": ap if ap is None else round(ap, 2)})
        return {**self.images[k], "has_image": self.paths[k] is not None, "gt": self._gt_rows(k),
                "crowd": self._crowd_rows(k), "runs": runs}

    def detections(self, indices: np.ndarray, *, run: int, thr: float, cls: Optional[int] = None) -> list[dict]:
        """COCO results of ``run`` on the images ``indices`` scoring >= ``thr`` (of class ``cls``), values as read."""
        r = self.runs[run]
        pick = np.zeros(len(self.images), bool)
        pick[indices] = True
        keep = pick[r.det_image] & (r.det_score >= thr)
        if cls is not None:
            keep &= r.det_cat == cls
        ids = np.array([im["id"] for im in self.images], np.int64)
        return [{"image_id": int(ids[k]), "category_id": int(c), "bbox": b.tolist(), "score": float(s)}
                for k, c, b, s in zip(r.det_image[keep], r.det_cat[keep], r.det_box[keep], r.det_score[keep])]
