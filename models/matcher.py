"""Label assignment: which anchors learn which ground-truth box.

Every matcher is called under ``torch.no_grad()`` as::

    matches = matcher(pred_boxes, anchors, gt_boxes)

with ``pred_boxes`` (B, R, 4) decoded predictions, ``anchors`` (R, 4) and
``gt_boxes`` a list of B tensors (G_i, 4), all xyxy pixels. It returns one
``Match`` per image: ``src`` (M,) anchor indices, ``tgt`` (M,) indices into that
image's boxes (pairs may repeat), and ``ignore`` (R,) bool or None: anchors that
are neither positive nor negative (max-IoU's band between its thresholds).

* ``UniformMatcher`` (official YOLOF): for every box, the k anchors whose
  *predicted* box is closest in L1 over (cx, cy, w, h), plus the k closest
  *anchors*; 2k pairs per box, no threshold.
* ``IoUTopKMatcher`` (the seed's alternative): for every box, the k anchors of
  highest IoU with it.
* ``MaxIoUMatcher`` (RetinaNet): each anchor goes to its best box when IoU >=
  0.5, is negative below 0.4 and ignored in between; each box also keeps its
  best anchor (low-quality matches), as detectron2's RetinaNet does.

Ties are broken deterministically in favour of the lower anchor index (stable
sort), so CPU and CUDA assign the same anchors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torchvision.ops import box_convert, box_iou


@dataclass
class Match:
    src: torch.Tensor  # (M,) anchor index
    tgt: torch.Tensor  # (M,) box index
    ignore: Optional[torch.Tensor] = None  # (R,) bool


def _pad_boxes(gt_boxes: Sequence[torch.Tensor], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, Gmax, 4) padded boxes and (B, Gmax) validity."""
    gmax = max(1, max(int(g.shape[0]) for g in gt_boxes))
    padded = like.new_zeros((len(gt_boxes), gmax, 4))
    valid = torch.zeros((len(gt_boxes), gmax), dtype=torch.bool, device=like.device)
    for i, g in enumerate(gt_boxes):
        padded[i, : g.shape[0]] = g
        valid[i, : g.shape[0]] = True
    return padded, valid


def _smallest_k(cost: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, k, G) of the k smallest entries along dim 1 of cost (B, R, G), lowest index first on ties."""
    k = min(k, cost.shape[1])
    return torch.sort(cost, dim=1, stable=True).indices[:, :k, :]


def _pairs_from_topk(idx_lists: Sequence[torch.Tensor], num_gt: Sequence[int]) -> list[Match]:
    """Turn per-image (k, G) index tensors into the official pair order.

    The official code concatenates, rank by rank, the pred-box choice then the
    anchor choice: ``src = [idx[0, :], idx1[0, :], idx[1, :], idx1[1, :], ...]``
    with ``tgt = [0..G-1, 0..G-1, ...]``.
    """
    matches = []
    for b, g in enumerate(num_gt):
        parts = [idx[b, :, :g] for idx in idx_lists]  # each (k, g)
        src = torch.stack(parts, dim=1).reshape(-1)  # rank-major, then source, then gt
        tgt = torch.arange(g, device=src.device).repeat(parts[0].shape[0] * len(parts))
        matches.append(Match(src=src, tgt=tgt))
    return matches


class UniformMatcher:
    def __init__(self, topk: int = 4):
        self.topk = topk

    @torch.no_grad()
    def __call__(self, pred_boxes: torch.Tensor, anchors: torch.Tensor, gt_boxes: Sequence[torch.Tensor]) -> list[Match]:
        b = pred_boxes.shape[0]
        gts, valid = _pad_boxes(gt_boxes, pred_boxes)
        gts_c = box_convert(gts, "xyxy", "cxcywh")
        pred_c = box_convert(pred_boxes, "xyxy", "cxcywh")
        anchor_c = box_convert(anchors, "xyxy", "cxcywh").unsqueeze(0).expand(b, -1, -1)
        cost_pred = torch.cdist(pred_c, gts_c, p=1)  # (B, R, Gmax)
        cost_anchor = torch.cdist(anchor_c.contiguous(), gts_c, p=1)
        idx_pred = _smallest_k(cost_pred, self.topk)
        idx_anchor = _smallest_k(cost_anchor, self.topk)
        return _pairs_from_topk([idx_pred, idx_anchor], [int(g.shape[0]) for g in gt_boxes])


class IoUTopKMatcher:
    def __init__(self, topk: int = 4):
        self.topk = topk

    @torch.no_grad()
    def __call__(self, pred_boxes: torch.Tensor, anchors: torch.Tensor, gt_boxes: Sequence[torch.Tensor]) -> list[Match]:
        gts, valid = _pad_boxes(gt_boxes, pred_boxes)
        b, gmax = gts.shape[:2]
        iou = box_iou(anchors, gts.reshape(-1, 4)).view(anchors.shape[0], b, gmax).permute(1, 0, 2)  # (B, R, Gmax)
        idx = _smallest_k(-iou, self.topk)
        return _pairs_from_topk([idx], [int(g.shape[0]) for g in gt_boxes])


class MaxIoUMatcher:
    def __init__(self, pos_thresh: float = 0.5, neg_thresh: float = 0.4, allow_low_quality: bool = True):
        self.pos_thresh, self.neg_thresh, self.allow_low_quality = pos_thresh, neg_thresh, allow_low_quality

    @torch.no_grad()
    def __call__(self, pred_boxes: torch.Tensor, anchors: torch.Tensor, gt_boxes: Sequence[torch.Tensor]) -> list[Match]:
        gts, valid = _pad_boxes(gt_boxes, pred_boxes)
        b, gmax = gts.shape[:2]
        r = anchors.shape[0]
        iou = box_iou(anchors, gts.reshape(-1, 4)).view(r, b, gmax).permute(1, 0, 2)  # (B, R, Gmax)
        iou = iou.masked_fill(~valid[:, None, :], -1.0)
        best_iou, best_gt = iou.max(dim=2)  # (B, R)
        positive = best_iou >= self.pos_thresh
        ignore = (best_iou >= self.neg_thresh) & ~positive
        if self.allow_low_quality:
            # every box keeps the anchors of its highest IoU (ties included), as detectron2
            gt_best = iou.max(dim=1, keepdim=True).values  # (B, 1, Gmax)
            low_quality = ((iou == gt_best) & valid[:, None, :] & (gt_best > 0)).any(dim=2)
            positive = positive | low_quality
            ignore = ignore & ~positive
        matches = []
        for i in range(b):
            src = positive[i].nonzero().squeeze(1)
            matches.append(Match(src=src, tgt=best_gt[i, src], ignore=ignore[i]))
        return matches


def build_matcher(name: str, topk: int = 4, pos_thresh: float = 0.5, neg_thresh: float = 0.4):
    if name == "uniform":
        return UniformMatcher(topk)
    if name == "iou_topk":
        return IoUTopKMatcher(topk)
    if name == "max_iou":
        return MaxIoUMatcher(pos_thresh, neg_thresh)
    raise ValueError(f"unknown matcher {name!r}")
