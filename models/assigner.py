"""Label assignment: the one step that decides what every anchor learns.

:class:`LabelAssigner` owns the matcher (:mod:`models.matcher`), the ignore
thresholds and the image mask; it turns the model's current predictions and
the ground truth into an :class:`Assignment` (anchor labels and the pairs kept
for the box loss), and :class:`models.criterion.YOLOFCriterion` computes the
losses from it. Training (``YOLOF.compute_losses``) and ``train.py
--vis_targets`` (:mod:`tools.visualize_targets`) call this same step.

The labels are built as in the official ``YOLOF.losses``:

1. every anchor starts as background (label K);
2. anchors the matcher marks as neither positive nor negative (``Match.ignore``,
   max-IoU's band) are ignored (-1);
3. (``ignore_thresholds``) anchors whose *predicted* box has IoU >
   ``neg_ignore_thresh`` (0.7) with any box are ignored (-1): they already cover
   an object and should not be pushed to background;
4. (``ignore_thresholds``) matched pairs whose *anchor* has IoU <
   ``pos_ignore_thresh`` (0.15) with the box are ignored (-1) and do not count
   in the box loss;
5. matched anchors take their box's class; when an anchor is matched twice the
   last pair wins (the official CPU behaviour, made deterministic here);
6. (``image_mask``) anchors whose centre lies in padding are ignored and lose
   their matches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torchvision.ops import box_iou

from models.matcher import Match


def anchor_valid_mask(anchors: torch.Tensor, image_sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
    """(B, R) True where the centre of anchor (R, 4) lies inside image ``(h, w)`` (not in padding)."""
    cx = (anchors[:, 0] + anchors[:, 2]) / 2
    cy = (anchors[:, 1] + anchors[:, 3]) / 2
    hw = torch.tensor(image_sizes, dtype=anchors.dtype, device=anchors.device)  # (B, 2)
    return (cx[None] < hw[:, 1:2]) & (cy[None] < hw[:, 0:1])


def _last_write_wins(num: int, index: torch.Tensor, values: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """``base[index] = values`` where, for repeated indices, the last occurrence wins (on every device)."""
    order = torch.arange(index.numel(), device=index.device)
    last = torch.full((num,), -1, dtype=torch.long, device=index.device)
    last.scatter_reduce_(0, index, order, reduce="amax")
    written = last >= 0
    out = base.clone()
    out[written] = values[last[written]]
    return out


@dataclass
class Assignment:
    """What the anchors of a batch of B images learn (R anchors, K classes).

    ``labels``: (B, R) int64 in {-1 ignored, 0..K-1 class, K background}.
    ``matches``: per image, the matcher's pairs (``src`` (M_i,) anchor index,
    ``tgt`` (M_i,) index into that image's boxes). ``keep``: per image, (M_i,)
    bool, the pairs that count in the box loss. ``gt_boxes``: per image, the
    (G_i, 4) xyxy boxes ``tgt`` indexes.
    """

    labels: torch.Tensor
    matches: list[Match]
    keep: list[torch.Tensor]
    gt_boxes: list[torch.Tensor]

    def kept_pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The P kept pairs of the whole batch: image index (P,), anchor index (P,), target box (P, 4) float."""
        pairs = list(zip(self.matches, self.keep))
        img = torch.cat([torch.full_like(m.src[keep], i) for i, (m, keep) in enumerate(pairs)])
        src = torch.cat([m.src[keep] for m, keep in pairs])
        boxes = torch.cat([g[m.tgt[keep]] for g, (m, keep) in zip(self.gt_boxes, pairs)]).float()
        return img, src, boxes


class LabelAssigner:
    """Matcher + ignore thresholds + image mask -> :class:`Assignment` (see the module docstring).

    Args:
        matcher: a matcher of :data:`models.matcher.MATCHERS`.
        num_classes: K, the background label.
        ignore_thresholds: apply ``neg_ignore_thresh`` (predicted-box IoU above it: ignored)
            and ``pos_ignore_thresh`` (anchor IoU of a pair below it: pair dropped).
        image_mask: ignore the anchors whose centre lies in padding.

    Holds no parameters or buffers (the model's state dict does not change with it).
    """

    def __init__(self, matcher, *, num_classes: int, ignore_thresholds: bool = True, neg_ignore_thresh: float = 0.7,
                 pos_ignore_thresh: float = 0.15, image_mask: bool = False):
        self.matcher = matcher
        self.num_classes = num_classes
        self.ignore_thresholds = ignore_thresholds
        self.neg_ignore_thresh, self.pos_ignore_thresh = neg_ignore_thresh, pos_ignore_thresh
        self.image_mask = image_mask

    @torch.no_grad()
    def __call__(self, pred_boxes: torch.Tensor, anchors: torch.Tensor, targets: Sequence[dict], *,
                 image_sizes: Optional[Sequence[tuple[int, int]]] = None) -> Assignment:
        """Match, then label.

        Args:
            pred_boxes: (B, R, 4) decoded predictions, xyxy pixels (used without gradient).
            anchors: (R, 4) xyxy pixels.
            targets: per image, ``boxes`` (G_i, 4) float xyxy pixels and ``labels`` (G_i,) in 0..K-1.
            image_sizes: per image, (h, w) before padding; needed with ``image_mask``.
        """
        pred_boxes = pred_boxes.detach()
        gt_boxes = [t["boxes"] for t in targets]
        matches = self.matcher(pred_boxes, anchors, gt_boxes)
        valid = anchor_valid_mask(anchors, image_sizes) if self.image_mask else None
        return self.assign(pred_boxes, anchors, matches, gt_boxes=gt_boxes,
                           gt_labels=[t["labels"] for t in targets], anchor_valid=valid)

    @torch.no_grad()
    def assign(self, pred_boxes: torch.Tensor, anchors: torch.Tensor, matches: Sequence[Match], *,
               gt_boxes: Sequence[torch.Tensor], gt_labels: Sequence[torch.Tensor],
               anchor_valid: Optional[torch.Tensor] = None) -> Assignment:
        """Label the anchors from given ``matches`` (one per image); ``anchor_valid`` (B, R) bool is the
        image mask (False: centre in padding), applied whenever given."""
        b, r = pred_boxes.shape[:2]
        labels_all, keep_all = [], []
        for i in range(b):  # per image: a handful of tensor ops, no per-anchor work
            labels = torch.full((r,), self.num_classes, dtype=torch.long, device=pred_boxes.device)
            m = matches[i]
            src, tgt = m.src, m.tgt
            keep = torch.ones_like(src, dtype=torch.bool)
            if m.ignore is not None:
                labels[m.ignore] = -1
            if gt_boxes[i].numel() > 0:
                if self.ignore_thresholds:
                    pred_iou = box_iou(pred_boxes[i], gt_boxes[i])  # (R, G)
                    labels[pred_iou.max(dim=1).values > self.neg_ignore_thresh] = -1
                    pos_iou = box_iou(anchors, gt_boxes[i])[src, tgt]
                    keep = pos_iou >= self.pos_ignore_thresh
                if anchor_valid is not None:
                    keep = keep & anchor_valid[i, src]
                values = torch.where(keep, gt_labels[i][tgt], torch.full_like(tgt, -1))
                if anchor_valid is not None:  # pairs on padding must not touch the labels at all
                    src_w, values = src[anchor_valid[i, src]], values[anchor_valid[i, src]]
                else:
                    src_w = src
                labels = _last_write_wins(r, src_w, values, labels)
            if anchor_valid is not None:
                labels[~anchor_valid[i]] = -1
            labels_all.append(labels)
            keep_all.append(keep)
        return Assignment(torch.stack(labels_all), list(matches), keep_all, list(gt_boxes))
