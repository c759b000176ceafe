"""YOLOF's training loss: focal loss on classes, GIoU loss on boxes.

The anchors' labels and the pairs kept for the box loss come from
:class:`models.assigner.LabelAssigner` (an :class:`models.assigner.Assignment`);
this module only turns them into losses:

``loss_cls`` = sigmoid focal loss summed over non-ignored anchors and
``loss_box_reg`` = sum of (1 - GIoU) over kept pairs, both divided by the number
of foreground anchors: of the whole batch, averaged over DDP ranks (official,
``normalization="batch"``, see :func:`foreground_normalizer`), or per image then
averaged over images (an ablation, ``normalization="per_image"``).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from models.assigner import Assignment

def foreground_normalizer(num_foreground, world_size: int):
    """``max(1, num_foreground / world_size)``: the divisor of ``normalization="batch"``.

    ``num_foreground`` is the foreground-anchor count summed over all DDP ranks
    (and micro-batches), ``world_size`` the number of ranks; the result is the
    per-rank average, at least 1. A tensor gives a tensor of the same dtype and
    device (``(n / w).clamp(min=1.0)``, the criterion's loss divisor); a Python
    number gives a Python float (``max(1.0, float(n) / w)``, the gradient factor
    of :func:`engine.step.train_step`). Both compute ``n / w`` then the lower
    bound, in the caller's own number type, so that the loss divisor and the
    gradient factor agree bit for bit with a run that computes either alone.
    """
    if torch.is_tensor(num_foreground):
        return (num_foreground / world_size).clamp(min=1.0)
    return max(1.0, float(num_foreground) / world_size)


class YOLOFCriterion:
    """Focal + GIoU losses of one batch from its :class:`models.assigner.Assignment` (see the module docstring).

    Holds no parameters or buffers.
    """

    def __init__(self, *, focal_alpha: float = 0.25, focal_gamma: float = 2.0, normalization: str = "batch",
                 cls_weight: float = 1.0, box_weight: float = 1.0):
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.normalization = normalization
        self.cls_weight, self.box_weight = cls_weight, box_weight

    def __call__(self, cls_logits: torch.Tensor, pred_boxes: torch.Tensor, assignment: Assignment, *,
                 reduce_over_ranks: bool = True) -> dict[str, torch.Tensor]:
        """Losses for one batch.

        Args:
            cls_logits: (B, R, K); pred_boxes: (B, R, 4) decoded (with grad).
            assignment: the anchors' labels and kept pairs, from :class:`models.assigner.LabelAssigner`.
            reduce_over_ranks: average the foreground count over DDP ranks (official).

        Returns ``loss_cls`` and ``loss_box_reg`` (normalised, weighted), and for
        exact gradient accumulation ``loss_sum`` (weighted, un-normalised for
        ``batch``, per-image-normalised and summed over images for ``per_image``),
        ``num_foreground`` (this process) and ``num_images``.
        """
        b, _, k = cls_logits.shape
        labels = assignment.labels
        valid = labels >= 0
        foreground = valid & (labels != k)
        target = torch.zeros_like(cls_logits)
        target[foreground] = torch.nn.functional.one_hot(labels[foreground], k).to(target.dtype)
        focal = sigmoid_focal_loss(cls_logits.float(), target.float(), alpha=self.focal_alpha, gamma=self.focal_gamma,
                                   reduction="none")  # (B, R, K)
        cls_per_image = (focal * valid[..., None]).sum(dim=(1, 2))  # (B,)
        # GIoU loss of all kept pairs of the batch in one call, summed per image with index_add
        img, src, tgt_boxes = assignment.kept_pairs()  # (M,), (M,), (M, 4)
        giou = generalized_box_iou_loss(pred_boxes[img, src].float(), tgt_boxes, reduction="none")  # (M,)
        box_per_image = (pred_boxes.sum() * 0.0).expand(b).clone().index_add(0, img, giou)  # (B,), keeps the graph
        fg_per_image = foreground.sum(dim=1).float()  # (B,)
        loss_cls, loss_box, loss_sum = self._normalize(cls_per_image, box_per_image, fg_per_image,
                                                       reduce_over_ranks=reduce_over_ranks)
        num_fg = fg_per_image.sum()
        return {
            "loss_cls": self.cls_weight * loss_cls,
            "loss_box_reg": self.box_weight * loss_box,
            "loss_sum": loss_sum,
            "num_foreground": num_fg.detach(),
            "num_images": torch.tensor(float(b), device=cls_logits.device),
        }

    def _normalize(self, cls_per_image: torch.Tensor, box_per_image: torch.Tensor, fg_per_image: torch.Tensor, *,
                   reduce_over_ranks: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss_cls, loss_box, loss_sum) from the per-image (B,) focal sums, GIoU sums and foreground counts."""
        if self.normalization == "batch":
            total, world = fg_per_image.sum(), 1
            if reduce_over_ranks and dist.is_available() and dist.is_initialized():
                dist.all_reduce(total)
                world = dist.get_world_size()
            normalizer = foreground_normalizer(total, world)
            loss_sum = self.cls_weight * cls_per_image.sum() + self.box_weight * box_per_image.sum()
            return cls_per_image.sum() / normalizer, box_per_image.sum() / normalizer, loss_sum
        denom = fg_per_image.clamp(min=1.0)
        loss_sum = ((self.cls_weight * cls_per_image + self.box_weight * box_per_image) / denom).sum()
        return (cls_per_image / denom).mean(), (box_per_image / denom).mean(), loss_sum
