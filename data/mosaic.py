"""Mosaic: four training images in one (YOLOv4), as the official YOLOF-CSP dataset applies it.

Official code: ``COCODatasetYOLOF.__getitem__`` / ``_blend_moasic`` in the YOLOF
playground (``yolof_base/coco.py``), with ``INPUT.MOSAIC = {MIN_OFFSET: 0.2,
MOSAIC_WIDTH: 640, MOSAIC_HEIGHT: 640}``. What it does, and what :class:`Mosaic` does:

1. The image is augmented by the per-image pipeline (JitterCrop ... RandomShift).
2. With probability 0.5 (official: ``np.random.randint(2) == 1``; here
   ``U(0, 1) < prob``) it becomes a mosaic: a cut point ``cut_x`` drawn in
   ``[int(W * min_offset), int(W * (1 - min_offset)))`` and then ``cut_y`` likewise
   (upper bounds exclusive) splits an ``H x W`` zero canvas into four quadrants.
3. Three more images are drawn uniformly from the whole dataset, each followed at
   once by its own per-image augmentation (draw, augment, draw, augment ...).
4. Quadrant k (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) shows the
   same corner of image k: the quadrant's outer corner is the image's corner, moved
   inwards past the JitterCrop padding (``target["jitter_pad"]``, truncated to
   whole pixels) so that the mean-filled border is skipped. The official clamps are
   kept: the skip towards the left/top is at most ``cut``, towards the right/bottom
   at most ``side - cut``, and the window always stays inside the image.
5. Boxes move with their pixels and are clipped to their quadrant; boxes left
   empty are dropped later by :class:`data.transforms.ClipAndFilterBoxes`.

One generalisation: an image smaller than its quadrant (impossible with the
official sizes, where a crash would follow) keeps its outer corner at the
canvas corner and leaves the rest of the quadrant zero.

A multi-image step (:mod:`data.multi_image`), like mixup. Randomness: every draw, including the choice of
the three images and their augmentation, comes from the sample's rng, so a sample is a pure function of
(index, seed).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from data.transforms import _INDEPENDENT_KEYS, PAD_KEY, RNG, Target, _per_box_keys, _randint, _uniform01
from utils.boxes import clip_boxes

__all__ = ["Mosaic", "place_mosaic", "quadrant_windows"]


def _window(img_len: int, cut: int, side: int, *, pad: float, near: bool) -> tuple[int, int, int]:
    """One axis of one quadrant: (source start in the image, destination start, length)."""
    if near:  # left / top quadrant: destination [0, cut), taken from the image's start past its padding
        length = cut
        skip = max(0, min(int(min(cut, pad)), img_len - length))
        return skip, 0, length
    length = side - cut  # right / bottom quadrant: destination [cut, side), taken from the image's end
    skip = max(0, min(int(min(img_len - cut, pad)), img_len - length))
    return img_len - skip - length, cut, length


def quadrant_windows(image_hw: tuple[int, int], pad: Sequence[float], *, cut_xy: tuple[int, int],
                     canvas_hw: tuple[int, int], k: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """x and y windows ``(source start, destination start, length)`` of image k (0..3) in the mosaic.

    ``pad`` is the image's (left, top, right, bottom) JitterCrop padding; the source
    start may be negative (or the window run past the image) only when the image is
    smaller than its quadrant.
    """
    (h, w), (cut_x, cut_y), (ch, cw) = image_hw, cut_xy, canvas_hw
    left, top, right, bottom = pad
    right_side, bottom_side = k in (1, 3), k in (2, 3)
    wx = _window(w, cut_x, cw, pad=right if right_side else left, near=not right_side)
    wy = _window(h, cut_y, ch, pad=bottom if bottom_side else top, near=not bottom_side)
    return wx, wy


def _paste(canvas: np.ndarray, image: np.ndarray, *, wx: tuple[int, int, int], wy: tuple[int, int, int]) -> None:
    """Copy the part of the source window that lies inside ``image`` into ``canvas`` (in place)."""
    (sx, dx, lx), (sy, dy, ly) = wx, wy
    h, w = image.shape[:2]
    x0, x1 = max(sx, 0), min(sx + lx, w)
    y0, y1 = max(sy, 0), min(sy + ly, h)
    if x1 > x0 and y1 > y0:
        canvas[dy + y0 - sy:dy + y1 - sy, dx + x0 - sx:dx + x1 - sx] = image[y0:y1, x0:x1]


def _move_boxes(boxes: np.ndarray, wx: tuple[int, int, int], wy: tuple[int, int, int]) -> np.ndarray:
    (sx, dx, lx), (sy, dy, ly) = wx, wy
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return clip_boxes(b - np.array([sx, sy, sx, sy]), ly, lx) + np.array([dx, dy, dx, dy])


def place_mosaic(parts: Sequence[tuple[np.ndarray, Target]], cut_xy: tuple[int, int],
                 canvas_hw: tuple[int, int]) -> tuple[np.ndarray, Target]:
    """Blend four augmented ``(image, target)`` pairs into one ``canvas_hw`` image at the cut point.

    Deterministic (no draws). The result keeps the first target's non-array entries
    (minus ``jitter_pad``) and concatenates boxes, per-box arrays and ``crowd_boxes``
    in quadrant order.
    """
    if len(parts) != 4:
        raise ValueError(f"a mosaic needs 4 images, got {len(parts)}")
    first = parts[0][0]
    canvas = np.zeros(tuple(canvas_hw) + first.shape[2:], dtype=first.dtype)
    per_box = _per_box_keys(parts[0][1])
    collected: dict[str, list[np.ndarray]] = {key: [] for key in ["boxes", *per_box, *_INDEPENDENT_KEYS]}
    for k, (image, target) in enumerate(parts):
        wx, wy = quadrant_windows(image.shape[:2], target.get(PAD_KEY, (0, 0, 0, 0)), cut_xy=cut_xy,
                                  canvas_hw=canvas_hw, k=k)
        _paste(canvas, image, wx=wx, wy=wy)
        collected["boxes"].append(_move_boxes(target["boxes"], wx, wy))
        for key in per_box:
            collected[key].append(np.asarray(target[key]))
        for key in _INDEPENDENT_KEYS:
            if target.get(key) is not None:
                collected[key].append(_move_boxes(target[key], wx, wy))
    out = {key: value for key, value in parts[0][1].items() if key != PAD_KEY}
    for key, arrays in collected.items():
        if arrays:
            out[key] = np.concatenate(arrays)
    return canvas, out


class Mosaic:
    """Per-image augmentation, then, with probability ``prob``, a 4-image mosaic (module docstring).

    Args:
        per_image: the per-image pipeline ``t(image, target, rng)`` (without the final clip).
        source: indexable, ``len()``-able, ``source[i] -> (image, target)`` untransformed
            (:class:`data.multi_image.RawSamples`); the other three images come from here.
        prob: mosaic probability (official 0.5).
        size: canvas ``(h, w)`` (official (640, 640)).
        min_offset: the cut point keeps this fraction of each side on both of its sides (official 0.2).
    """

    def __init__(self, per_image: Callable, source, *, prob: float = 0.5, size: Sequence[int] = (640, 640),
                 min_offset: float = 0.2):
        size = tuple(int(s) for s in size)
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"mosaic prob must be in [0, 1], got {prob}")
        if len(size) != 2 or not 0.0 <= min_offset < 0.5 or any(
                int(s * min_offset) >= int(s * (1 - min_offset)) for s in size):
            raise ValueError(f"mosaic size {size} with min_offset {min_offset} leaves no room for the cut point")
        self.per_image, self.source = per_image, source
        self.prob, self.size, self.min_offset = float(prob), size, float(min_offset)

    def sample_cut(self, rng: RNG) -> tuple[int, int]:
        """(cut_x, cut_y), x drawn first as in the official code."""
        h, w = self.size
        cut_x = _randint(rng, int(w * self.min_offset), int(w * (1 - self.min_offset)))
        cut_y = _randint(rng, int(h * self.min_offset), int(h * (1 - self.min_offset)))
        return cut_x, cut_y

    def __call__(self, image: np.ndarray, target: Target, rng: RNG):
        image, target = self.per_image(image, target, rng)
        if not (self.prob > 0 and _uniform01(rng) < self.prob):
            return image, target
        cut = self.sample_cut(rng)
        parts = [(image, target)]
        for _ in range(3):
            other = self.source[_randint(rng, 0, len(self.source))]
            parts.append(self.per_image(*other, rng))
        return place_mosaic(parts, cut, self.size)

    def __repr__(self) -> str:
        return f"Mosaic(prob={self.prob}, size={self.size}, min_offset={self.min_offset}, per_image={self.per_image!r})"
