"""Agreement between two sets of detections of the same image: how backends and precisions are checked."""
from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou


def matched(reference: dict, candidate: dict, *, iou_thresh: float = 0.99, score_tol: float = 1e-3,
            min_score: float = 0.0) -> tuple[int, int]:
    """(matched, total): reference detections with score >= ``min_score`` that have a candidate detection
    of the same label with IoU > ``iou_thresh`` and |score difference| < ``score_tol``.

    Both are dicts with ``boxes`` (N, 4) xyxy, ``scores`` (N,), ``labels`` (N,) (numpy or torch).
    """
    def t(x):
        return torch.as_tensor(np.asarray(x))

    keep = t(reference["scores"]) >= min_score
    rb, rs, rl = (t(reference["boxes"])[keep].double(), t(reference["scores"])[keep].double(),
                  t(reference["labels"])[keep])
    cb, cs, cl = t(candidate["boxes"]).double(), t(candidate["scores"]).double(), t(candidate["labels"])
    if len(rb) == 0 or len(cb) == 0:
        return 0, len(rb)
    ok = (rl[:, None] == cl[None]) & (box_iou(rb, cb) > iou_thresh) & ((rs[:, None] - cs[None]).abs() < score_tol)
    return int(ok.any(1).sum()), len(rb)


def matched_fraction(references, candidates, **kwargs) -> tuple[float, int]:
    """(fraction of all reference detections matched, their number) over lists of per-image detections."""
    pairs = [matched(r, c, **kwargs) for r, c in zip(references, candidates, strict=True)]
    hit, total = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
    return (hit / total if total else 0.0), total
