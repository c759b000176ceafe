"""Mixup for detection ("Bag of Freebies for Training Object Detection Neural Networks", Zhang et al. 2019).

Not part of official YOLOF; the ablation switch ``data.mixup.prob`` (default 0). A multi-image step
(:mod:`data.multi_image`): :class:`Mixup` runs the sample's whole training pipeline on its image ``a`` and,
with probability ``prob``, on a second, uniformly drawn image ``b``, and blends them::

    mixed = lam * a + (1 - lam) * b,    lam ~ Beta(alpha, alpha)   (alpha <= 0: lam = 0.5)

on ``a``'s canvas: ``b`` is placed at the top-left corner, cut where it is larger than ``a`` and counted as
0 where it is smaller (so pixels outside ``b`` are ``lam * a``), the same zero fill as padding and
RandomShift. The result is a float32 image in 0-255 (not rounded back to uint8, so the blend is exact; the
model accepts both). Both box sets are kept (``b``'s clipped to ``a``'s canvas, empty ones dropped) with
*unweighted* labels: the criterion has no per-box weights, so every box counts fully whatever ``lam`` is
(the paper weights the loss by ``lam``; YOLOX does not).

Randomness: the draws (mix or not, which ``b``, ``lam``) and ``b``'s augmentation use the sample's rng right
after ``a``'s augmentation, so a sample stays a pure function of (index, seed).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from data.transforms import RNG, Target, _per_box_keys, _randint, _uniform01
from utils.boxes import clip_boxes

__all__ = ["Mixup", "mix_samples"]


def mix_samples(a: tuple[np.ndarray, Target], b: tuple[np.ndarray, Target], lam: float) -> tuple[np.ndarray, Target]:
    """Blend sample ``b`` (HWC image, target) into sample ``a`` with ratio ``lam`` (see the module docstring)."""
    image_a, target_a = a
    image_b, target_b = b
    h, w = image_a.shape[:2]
    hb, wb = min(h, image_b.shape[0]), min(w, image_b.shape[1])
    mixed = image_a.astype(np.float32) * lam
    mixed[:hb, :wb] += image_b[:hb, :wb].astype(np.float32) * (1.0 - lam)

    def clip(boxes) -> tuple[np.ndarray, np.ndarray]:
        boxes = clip_boxes(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), h, w)
        return boxes, ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)

    boxes_b, keep_b = clip(target_b["boxes"])
    target = dict(target_a)
    target["boxes"] = np.concatenate([np.asarray(target_a["boxes"], dtype=np.float64).reshape(-1, 4), boxes_b[keep_b]])
    for key in _per_box_keys(target_a):  # labels and the dataset's other per-box arrays
        if key in target_b:
            target[key] = np.concatenate([np.asarray(target_a[key]), np.asarray(target_b[key])[keep_b]])
    if "crowd_boxes" in target_a and "crowd_boxes" in target_b:
        crowd_b, keep_c = clip(target_b["crowd_boxes"])
        target["crowd_boxes"] = np.concatenate([np.asarray(target_a["crowd_boxes"], dtype=np.float64).reshape(-1, 4),
                                                crowd_b[keep_c]])
    return mixed, target


class Mixup:
    """``pipeline`` on the sample, then, with probability ``prob``, blended with a second sample (module docstring).

    Args:
        pipeline: the sample's whole training pipeline ``t(image, target, rng)`` (mosaic included when on).
        source: ``source[i] -> (image, target)`` untransformed (:class:`data.multi_image.RawSamples`).
        prob: mixup probability; alpha: ``lam ~ Beta(alpha, alpha)`` (``<= 0``: 0.5).
    """

    def __init__(self, pipeline: Callable, source, *, prob: float, alpha: float = 1.5):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"mixup prob must be in [0, 1], got {prob}")
        self.pipeline, self.source, self.prob, self.alpha = pipeline, source, float(prob), float(alpha)

    def sample_lambda(self, rng: RNG) -> float:
        return float(rng.beta(self.alpha, self.alpha)) if self.alpha > 0 else 0.5

    def __call__(self, image: np.ndarray, target: Target, rng: RNG):
        a = self.pipeline(image, target, rng)
        if not (self.prob > 0 and _uniform01(rng) < self.prob):
            return a
        other = _randint(rng, 0, len(self.source))
        lam = self.sample_lambda(rng)
        return mix_samples(a, self.pipeline(*self.source[other], rng), lam)

    def __repr__(self) -> str:
        return f"Mixup(prob={self.prob}, alpha={self.alpha}, pipeline={self.pipeline!r})"
