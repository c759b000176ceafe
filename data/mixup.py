"""Mixup for detection ("Bag of Freebies for Training Object Detection Neural Networks", Zhang et al. 2019).

Not part of official YOLOF; the ablation switch ``data.mixup_prob`` (default 0).

:class:`MixupDataset` wraps a training dataset (after its transforms). With
probability ``prob`` an image ``a`` is blended with a second, uniformly drawn
image ``b`` (itself augmented)::

    mixed = lam * a + (1 - lam) * b,    lam ~ Beta(alpha, alpha)   (alpha <= 0: lam = 0.5)

on ``a``'s canvas: ``b`` is placed at the top-left corner, cut where it is larger
than ``a`` and counted as 0 where it is smaller (so pixels outside ``b`` are
``lam * a``), the same zero fill as padding and RandomShift. The result is a
float32 image in 0-255 (not rounded back to uint8, so the blend is exact; the
model accepts both). Both box sets are kept (``b``'s clipped to ``a``'s canvas,
empty ones dropped) with *unweighted* labels: the criterion has no per-box
weights, so every box counts fully whatever ``lam`` is (the paper weights the
loss by ``lam``; YOLOX does not).

Randomness: the draws (mix or not, which ``b``, ``lam``) and ``b``'s augmentation
use the inner dataset's rng right after ``a``'s augmentation, so a sample stays a
pure function of (index, seed) under :class:`data.build.SeededDataset`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from utils.boxes import clip_boxes


def mix_samples(a: tuple[torch.Tensor, dict], b: tuple[torch.Tensor, dict], lam: float, *,
                per_box_keys: tuple[str, ...] = ()) -> tuple[torch.Tensor, dict]:
    """Blend sample ``b`` into sample ``a`` with ratio ``lam`` (see the module docstring)."""
    image_a, target_a = a
    image_b, target_b = b
    h, w = image_a.shape[-2:]
    hb, wb = min(h, image_b.shape[-2]), min(w, image_b.shape[-1])
    mixed = image_a.float() * lam
    mixed[:, :hb, :wb] += image_b[:, :hb, :wb].float() * (1.0 - lam)

    def clip(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        boxes = clip_boxes(boxes.reshape(-1, 4), h, w)
        return boxes, ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)

    boxes_b, keep_b = clip(target_b["boxes"])
    target = dict(target_a)
    target["boxes"] = torch.cat([target_a["boxes"].reshape(-1, 4), boxes_b[keep_b].to(target_a["boxes"].dtype)])
    target["labels"] = torch.cat([target_a["labels"], target_b["labels"][keep_b]])
    for key in per_box_keys:
        if key in target_a and key in target_b:
            target[key] = torch.cat([target_a[key], target_b[key][keep_b]])
    if "crowd_boxes" in target_a and "crowd_boxes" in target_b:
        crowd_b, keep_c = clip(target_b["crowd_boxes"])
        target["crowd_boxes"] = torch.cat([target_a["crowd_boxes"].reshape(-1, 4),
                                           crowd_b[keep_c].to(target_a["crowd_boxes"].dtype)])
    return mixed, target


class MixupDataset(Dataset):
    """``dataset`` whose samples are mixed with another one with probability ``prob``.

    Everything else (``class_names``, ``coco``, ``set_rng``...) is the inner dataset's.
    """

    def __init__(self, dataset: Dataset, prob: float, alpha: float = 1.5):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"mixup prob must be in [0, 1], got {prob}")
        self.dataset, self.prob, self.alpha = dataset, float(prob), float(alpha)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:  # only called for names this wrapper lacks
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def sample_lambda(self, rng: np.random.Generator) -> float:
        return float(rng.beta(self.alpha, self.alpha)) if self.alpha > 0 else 0.5

    def __getitem__(self, index: int):
        a = self.dataset[index]
        rng = self.dataset.rng
        if self.prob <= 0 or not float(rng.uniform(0.0, 1.0)) < self.prob:
            return a
        other = int(rng.integers(len(self.dataset)))
        lam = self.sample_lambda(rng)
        b = self.dataset[other]
        return mix_samples(a, b, lam, per_box_keys=tuple(getattr(self.dataset, "per_box_extra", ())))
