"""YOLOF's training loss: focal loss on classes, GIoU loss on boxes.

Given the matches of :mod:`models.matcher`, anchor labels are built as in the
official ``YOLOF.losses``:

1. every anchor starts as background (label K);
2. (``ignore_thresholds``) anchors whose *predicted* box has IoU > 0.7 with any
   box are ignored (-1): they already cover an object and should not be pushed
   to background;
3. (``ignore_thresholds``) matched pairs whose *anchor* has IoU < 0.15 with the
   box are ignored (-1) and do not count in the box loss;
4. matched anchors take their box's class; when an anchor is matched twice the
   last pair wins (the official CPU behaviour, made deterministic here);
5. (``image_mask``) anchors whose centre lies in padding are ignored and lose
   their matches.

``loss_cls`` = sigmoid focal loss summed over non-ignored anchors and
``loss_box_reg`` = sum of (1 - GIoU) over kept pairs, both divided by the number
of foreground anchors: of the whole batch, averaged over DDP ranks (official,
``normalization="batch"``), or per image then averaged over images (the seed's
method 1, ``normalization="per_image"``).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.distributed as dist
from torchvision.ops import box_iou, generalized_box_iou_loss, sigmoid_focal_loss

from models.matcher import Match

NORMALIZATIONS = ("batch", "per_image")  # model.loss.normalization


def foreground_normalizer(num_foreground, world_size: int):
    """``max(1, num_foreground / world_size)``: the divisor of ``normalization="batch"``.

    ``num_foreground`` is the foreground-anchor count summed over all DDP ranks
    (and micro-batches), ``world_size`` the number of ranks; the result is the
    per-rank average, at least 1. A tensor gives a tensor of the same dtype and
    device (``(n / w).clamp(min=1.0)``, the criterion's loss divisor); a Python
    number gives a Python float (``max(1.0, float(n) / w)``, the gradient factor
    of :func:`engine.step.train_step`). Both compute ``n / w`` then the lower
    bound, so each caller gets exactly the arithmetic it had before this
    function existed.
    """
    if torch.is_tensor(num_foreground):
        return (num_foreground / world_size).clamp(min=1.0)
    return max(1.0, float(num_foreground) / world_size)


def _last_write_wins(num: int, index: torch.Tensor, values: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """``base[index] = values`` where, for repeated indices, the last occurrence wins (on every device)."""
    order = torch.arange(index.numel(), device=index.device)
    last = torch.full((num,), -1, dtype=torch.long, device=index.device)
    last.scatter_reduce_(0, index, order, reduce="amax")
    written = last >= 0
    out = base.clone()
    out[written] = values[last[written]]
    return out


class YOLOFCriterion:
    def __init__(self, num_classes: int, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                 ignore_thresholds: bool = True, neg_ignore_thresh: float = 0.7, pos_ignore_thresh: float = 0.15,
                 normalization: str = "batch", image_mask: bool = False, cls_weight: float = 1.0,
                 box_weight: float = 1.0):
        if normalization not in ("batch", "per_image"):
            raise ValueError(f"unknown loss normalization {normalization!r}")
        self.num_classes = num_classes
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.ignore_thresholds = ignore_thresholds
        self.neg_ignore_thresh, self.pos_ignore_thresh = neg_ignore_thresh, pos_ignore_thresh
        self.normalization = normalization
        self.image_mask = image_mask
        self.cls_weight, self.box_weight = cls_weight, box_weight

    @torch.no_grad()
    def assign(self, pred_boxes: torch.Tensor, anchors: torch.Tensor, gt_boxes: Sequence[torch.Tensor],
               gt_labels: Sequence[torch.Tensor], matches: Sequence[Match],
               anchor_valid: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Anchor labels (B, R) in {-1 ignored, 0..K-1 class, K background} and, per image,
        the bool (M_i,) mask of the pairs kept for the box loss."""
        b, r = pred_boxes.shape[:2]
        k = self.num_classes
        labels_all, keep_all = [], []
        for i in range(b):  # per image: a handful of tensor ops, no per-anchor work
            labels = torch.full((r,), k, dtype=torch.long, device=pred_boxes.device)
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
        return torch.stack(labels_all), keep_all

    def __call__(self, cls_logits: torch.Tensor, pred_boxes: torch.Tensor, anchors: torch.Tensor,
                 gt_boxes: Sequence[torch.Tensor], gt_labels: Sequence[torch.Tensor], matches: Sequence[Match],
                 anchor_valid: Optional[torch.Tensor] = None, reduce_over_ranks: bool = True) -> dict[str, torch.Tensor]:
        """Losses for one batch.

        Args:
            cls_logits: (B, R, K); pred_boxes: (B, R, 4) decoded (with grad); anchors: (R, 4).
            gt_boxes / gt_labels: per image (G_i, 4) xyxy and (G_i,) in 0..K-1.
            matches: per image, from the matcher.
            anchor_valid: (B, R) bool, False where the anchor centre is in padding (used with ``image_mask``).
            reduce_over_ranks: average the foreground count over DDP ranks (official).

        Returns ``loss_cls`` and ``loss_box_reg`` (normalised, weighted), and for
        exact gradient accumulation ``loss_sum`` (weighted, un-normalised for
        ``batch``, per-image-normalised and summed over images for ``per_image``),
        ``num_foreground`` (this process) and ``num_images``.
        """
        b, r, k = cls_logits.shape
        labels, keep = self.assign(pred_boxes.detach(), anchors, gt_boxes, gt_labels, matches,
                                   anchor_valid if self.image_mask else None)
        valid = labels >= 0
        foreground = valid & (labels != k)
        target = torch.zeros_like(cls_logits)
        target[foreground] = torch.nn.functional.one_hot(labels[foreground], k).to(target.dtype)
        focal = sigmoid_focal_loss(cls_logits.float(), target.float(), alpha=self.focal_alpha, gamma=self.focal_gamma,
                                   reduction="none")  # (B, R, K)
        cls_per_image = (focal * valid[..., None]).sum(dim=(1, 2))  # (B,)
        # GIoU loss of all kept pairs of the batch in one call, summed per image with index_add
        img = torch.cat([torch.full_like(m.src[keep[i]], i) for i, m in enumerate(matches)])  # (M,)
        src = torch.cat([m.src[keep[i]] for i, m in enumerate(matches)])
        tgt_boxes = torch.cat([gt_boxes[i][m.tgt[keep[i]]] for i, m in enumerate(matches)]).float()
        giou = generalized_box_iou_loss(pred_boxes[img, src].float(), tgt_boxes, reduction="none")  # (M,)
        box_per_image = (pred_boxes.sum() * 0.0).expand(b).clone().index_add(0, img, giou)  # (B,), keeps the graph
        fg_per_image = foreground.sum(dim=1).float()  # (B,)
        num_fg = fg_per_image.sum()

        if self.normalization == "batch":
            total, world = num_fg.clone(), 1
            if reduce_over_ranks and dist.is_available() and dist.is_initialized():
                dist.all_reduce(total)
                world = dist.get_world_size()
            normalizer = foreground_normalizer(total, world)
            loss_cls = cls_per_image.sum() / normalizer
            loss_box = box_per_image.sum() / normalizer
            loss_sum = self.cls_weight * cls_per_image.sum() + self.box_weight * box_per_image.sum()
        else:
            denom = fg_per_image.clamp(min=1.0)
            loss_cls = (cls_per_image / denom).mean()
            loss_box = (box_per_image / denom).mean()
            loss_sum = ((self.cls_weight * cls_per_image + self.box_weight * box_per_image) / denom).sum()
        return {
            "loss_cls": self.cls_weight * loss_cls,
            "loss_box_reg": self.box_weight * loss_box,
            "loss_sum": loss_sum,
            "num_foreground": num_fg.detach(),
            "num_images": torch.tensor(float(b), device=cls_logits.device),
        }
