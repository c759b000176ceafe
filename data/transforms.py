"""Numpy-level detection transforms (the official YOLOF/cvpods training pipeline).

Every transform is a callable ``t(image, target, rng) -> (image, target)``:

* ``image``: HWC ``uint8`` numpy array (BGR as decoded by OpenCV; transforms are
  channel-order agnostic).
* ``target``: dict. ``target["boxes"]`` is an (N, 4) float array of XYXY boxes in
  absolute, continuous pixel coordinates (a box covering the whole image is
  ``[0, 0, W, H]``). ``target["labels"]`` is (N,). Every other numpy array with
  ``ndim >= 1`` is a *per-box* array (e.g. ``difficult``) and is filtered in step
  with ``boxes``. The one exception is ``target["crowd_boxes"]`` (M, 4): a second,
  independent set of boxes that is transformed geometrically like ``boxes`` and
  clipped/filtered on its own. Non-array entries (ints, strings) pass through.
  One of them is geometric: ``target["jitter_pad"]`` (:data:`PAD_KEY`), set by
  :class:`data.yolo_transforms.JitterCrop`, the (left, top, right, bottom) widths
  of the mean-filled padding in current pixels; resizes scale it and flips swap
  left and right (RandomShift leaves it, as the official code does), so that
  :class:`data.mosaic.Mosaic` can skip the padding.
  Transforms never modify their inputs in place; they return new arrays.
* ``rng``: a ``numpy.random.Generator`` (the datasets keep one per worker
  process). A legacy ``numpy.random.RandomState`` is accepted too; with it the
  draws are made with exactly the calls the official code makes on numpy's global
  RNG (``uniform(0, 1, [])``, ``randint``, ``choice``), so
  ``RandomShift()(img, tgt, np.random.RandomState(s))`` reproduces the official
  ``np.random.seed(s); RandomShift.get_transform(img)``. With a ``Generator`` the
  *semantics* (order of draws, ranges, exclusive upper bound) are the same but the
  numbers differ, since the official code's numpy global RNG stream cannot be
  reproduced from a Generator. We deliberately use a per-worker Generator instead
  of numpy's global RNG: the global RNG is duplicated by ``fork`` into every
  DataLoader worker (identical augmentations across workers) unless it is
  reseeded, and it is shared with any other library that uses it.

Official pipeline (cvpods ``yolof.res50.C5.1x``):
train: ResizeShortestEdge((800,), 1333, "choice") -> RandomFlip() -> RandomShift(max_shifts=32)
test:  ResizeShortestEdge(800, 1333)
followed in the dataset mapper by ``annotations_to_instances`` (clip boxes to the
image) and ``filter_empty_instances`` (drop boxes with width or height <= 0); here
both are :class:`ClipAndFilterBoxes`.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import cv2
import numpy as np

from utils.boxes import clip_boxes

__all__ = [
    "Compose",
    "ResizeShortestEdge",
    "RandomFlip",
    "RandomShift",
    "ClipAndFilterBoxes",
    "shift_image_and_boxes",
    "build_transforms",
    "BOX_KEYS",
    "PAD_KEY",
]

RNG = Union[np.random.Generator, np.random.RandomState]
Target = dict

# Keys holding (K, 4) XYXY boxes that geometric transforms must move.
# "boxes" is the main set (other per-box arrays follow it); "crowd_boxes" is independent.
BOX_KEYS = ("boxes", "crowd_boxes")
_INDEPENDENT_KEYS = ("crowd_boxes",)
# (left, top, right, bottom) padding of a JitterCrop, in current pixels (a tuple, not per-box).
PAD_KEY = "jitter_pad"


# ----------------------------------------------------------------------------- rng helpers
def _uniform01(rng: Any) -> float:
    """One U[0, 1) draw, made like cvpods' ``TransformGen._rand_range()``."""
    if isinstance(rng, np.random.RandomState):
        return float(rng.uniform(0, 1.0, []))  # exactly np.random.uniform(0, 1.0, [])
    return float(rng.uniform(0.0, 1.0))


def _randint(rng: Any, low: int, high: int) -> int:
    """Integer in [low, high) (high EXCLUSIVE, like np.random.randint)."""
    if isinstance(rng, np.random.RandomState):
        return int(rng.randint(low=low, high=high))
    return int(rng.integers(low, high))


def _choice(rng: Any, values: Sequence[int]) -> int:
    if isinstance(rng, np.random.RandomState):
        return int(rng.choice(values))
    return int(values[int(rng.integers(0, len(values)))])


# ----------------------------------------------------------------------------- helpers
def _map_boxes(target: Target, fn: Callable[[np.ndarray], np.ndarray]) -> Target:
    """Return a shallow copy of target with fn applied to every box array in BOX_KEYS."""
    out = dict(target)
    for key in BOX_KEYS:
        if key in out and out[key] is not None:
            boxes = np.asarray(out[key])
            if not np.issubdtype(boxes.dtype, np.floating):
                boxes = boxes.astype(np.float64)
            if boxes.size == 0:
                out[key] = boxes.reshape(0, 4).copy()
            else:
                out[key] = fn(boxes)
    return out


def _scale_pad(target: Target, sx: float, sy: float) -> Target:
    """Scale the JitterCrop padding (``PAD_KEY``) with a resize by (sx, sy); no-op without it."""
    if PAD_KEY not in target:
        return target
    left, top, right, bottom = target[PAD_KEY]
    return {**target, PAD_KEY: (left * sx, top * sy, right * sx, bottom * sy)}


def _per_box_keys(target: Target) -> list[str]:
    n = len(target["boxes"])
    keys = []
    for key, value in target.items():
        if key == "boxes" or key in _INDEPENDENT_KEYS:
            continue
        if isinstance(value, np.ndarray) and value.ndim >= 1:
            if len(value) != n:
                raise ValueError(
                    f"target[{key!r}] has {len(value)} entries but target['boxes'] has {n}; "
                    "every numpy array in a target (except 'crowd_boxes') must be per-box"
                )
            keys.append(key)
    return keys


def resize_to(image: np.ndarray, target: Target, shape: tuple[int, int], *, interp: int) -> tuple[np.ndarray, Target]:
    """Resize ``image`` to ``shape`` (h, w); boxes and the recorded padding scale with x and y separately."""
    h, w = image.shape[:2]
    newh, neww = shape
    if (newh, neww) != (h, w):
        image = cv2.resize(_contiguous(image), (neww, newh), interpolation=interp)
        if image.ndim == 2:  # cv2 drops a trailing channel axis of size 1
            image = image[:, :, None]
    sx, sy = neww / w, newh / h
    scale = np.array([sx, sy, sx, sy])
    target = _map_boxes(target, lambda b: (b * scale).astype(b.dtype, copy=False))
    return image, _scale_pad(target, sx, sy)


def _contiguous(image: np.ndarray) -> np.ndarray:
    return image if image.flags["C_CONTIGUOUS"] else np.ascontiguousarray(image)


# ----------------------------------------------------------------------------- transforms
class Compose:
    """Apply transforms in order, threading the same rng through all of them."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, image: np.ndarray, target: Target, rng: RNG):
        for t in self.transforms:
            image, target = t(image, target, rng)
        return image, target

    def __repr__(self) -> str:
        inner = ",\n    ".join(repr(t) for t in self.transforms)
        return f"Compose([\n    {inner}\n])"


class ResizeShortestEdge:
    """Resize so that the shorter side is ``short_edge_length`` (sampled) and the longer <= ``max_size``.

    Follows cvpods/detectron2 ``ResizeShortestEdge.get_transform``: with ``size``
    sampled (``"choice"``: one of the values; ``"range"``: integer in
    [lo, hi] inclusive), ``scale = size / min(h, w)``; the shorter side becomes
    ``size`` and the longer ``scale * long``; if the longer exceeds ``max_size``
    both are multiplied by ``max_size / longer``; finally each side is rounded as
    ``int(x + 0.5)`` (the official rounding; half-up rather than Python's
    banker's ``round``). ``size == 0`` means no resize.
    Interpolation is ``cv2.INTER_LINEAR`` (the official code uses PIL bilinear,
    which differs slightly, mostly when downscaling where PIL antialiases).
    Boxes are scaled by the actual ratios ``new_w / w`` and ``new_h / h``.
    """

    def __init__(self, short_edge_length: Union[int, Sequence[int]], max_size: int = 1333, *,
                 sample_style: str = "choice", interp: int = cv2.INTER_LINEAR):
        if isinstance(short_edge_length, (int, np.integer)):
            short_edge_length = (int(short_edge_length),)
        short_edge_length = tuple(int(s) for s in short_edge_length)
        if sample_style not in ("choice", "range"):
            raise ValueError(f"sample_style must be 'choice' or 'range', got {sample_style!r}")
        if sample_style == "range" and len(short_edge_length) != 2:
            raise ValueError(f"sample_style='range' needs (min, max), got {short_edge_length}")
        if len(short_edge_length) == 0:
            raise ValueError("short_edge_length must not be empty")
        self.short_edge_length = short_edge_length
        self.max_size = int(max_size)
        self.sample_style = sample_style
        self.interp = interp

    @staticmethod
    def get_output_shape(h: int, w: int, *, size: int, max_size: int) -> tuple[int, int]:
        scale = size * 1.0 / min(h, w)
        if h < w:
            newh, neww = float(size), scale * w
        else:
            newh, neww = scale * h, float(size)
        if max(newh, neww) > max_size:
            scale = max_size * 1.0 / max(newh, neww)
            newh *= scale
            neww *= scale
        return int(newh + 0.5), int(neww + 0.5)

    def output_shape(self, h: int, w: int) -> tuple[int, int]:
        """(h, w) an image of size (h, w) is resized to by a one-size (test-time) resize; size 0 keeps it."""
        if self.sample_style != "choice" or len(self.short_edge_length) != 1:
            raise ValueError(f"{self!r} samples its size: the output shape is not a function of the input")
        size = self.short_edge_length[0]
        return (h, w) if size == 0 else self.get_output_shape(h, w, size=size, max_size=self.max_size)

    def sample_size(self, rng: RNG) -> int:
        if self.sample_style == "range":
            lo, hi = self.short_edge_length
            return _randint(rng, lo, hi + 1)
        return _choice(rng, self.short_edge_length)

    def __call__(self, image: np.ndarray, target: Target, rng: RNG):
        size = self.sample_size(rng)
        if size == 0:
            return image, target
        h, w = image.shape[:2]
        return resize_to(image, target, self.get_output_shape(h, w, size=size, max_size=self.max_size),
                         interp=self.interp)

    def __repr__(self) -> str:
        return (f"ResizeShortestEdge(short_edge_length={self.short_edge_length}, "
                f"max_size={self.max_size}, sample_style={self.sample_style!r})")


class RandomFlip:
    """Horizontal flip with probability ``prob`` (draw: ``uniform(0, 1) < prob``).

    Boxes: ``x1' = W - x2``, ``x2' = W - x1`` (continuous coordinates).
    """

    def __init__(self, prob: float = 0.5):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.prob = prob

    def __call__(self, image: np.ndarray, target: Target, rng: RNG):
        if not _uniform01(rng) < self.prob:
            return image, target
        w = image.shape[1]
        if image.ndim == 3 and image.shape[2] <= 4 and image.dtype == np.uint8:
            image = cv2.flip(_contiguous(image), 1)  # ~10x faster than a strided numpy copy
        else:
            image = np.ascontiguousarray(image[:, ::-1])

        def flip(b: np.ndarray) -> np.ndarray:
            out = b.copy()
            out[:, 0] = w - b[:, 2]
            out[:, 2] = w - b[:, 0]
            return out

        target = _map_boxes(target, flip)
        if PAD_KEY in target:  # the left padding is now on the right
            left, top, right, bottom = target[PAD_KEY]
            target[PAD_KEY] = (right, top, left, bottom)
        return image, target

    def __repr__(self) -> str:
        return f"RandomFlip(prob={self.prob})"


def shift_image_and_boxes(image: np.ndarray, boxes: Optional[np.ndarray], shift_x: int, shift_y: int):
    """Official cvpods ``ShiftTransform``: move the content by (+shift_x, +shift_y).

    Positive shifts move content right/down. The result has the same size and
    dtype; the uncovered area is 0 (raw pixel space). Boxes (K, 4) XYXY get
    ``x += shift_x``, ``y += shift_y`` with NO clipping (clip/filter happens later
    in :class:`ClipAndFilterBoxes`). Requires ``|shift| < size`` along each axis
    (always true after resizing to >= 800 px); ``|shift| == size`` gives an
    all-zero image like the official code. ``boxes`` may be None.

    Returns ``(new_image, new_boxes)``.
    """
    shift_x, shift_y = int(shift_x), int(shift_y)
    img_h, img_w = image.shape[:2]
    if abs(shift_x) > img_w or abs(shift_y) > img_h:
        raise ValueError(f"shift ({shift_x}, {shift_y}) larger than the image ({img_h}x{img_w})")
    new_img = np.zeros_like(image)
    new_x, orig_x = (0, -shift_x) if shift_x < 0 else (shift_x, 0)
    new_y, orig_y = (0, -shift_y) if shift_y < 0 else (shift_y, 0)
    new_h = img_h - abs(shift_y)
    new_w = img_w - abs(shift_x)
    new_img[new_y:new_y + new_h, new_x:new_x + new_w] = image[orig_y:orig_y + new_h, orig_x:orig_x + new_w]
    new_boxes = None if boxes is None else _shift_boxes(np.asarray(boxes), shift_x, shift_y)
    return new_img, new_boxes


def _shift_boxes(boxes: np.ndarray, shift_x: int, shift_y: int) -> np.ndarray:
    out = boxes.astype(np.float64) if not np.issubdtype(boxes.dtype, np.floating) else boxes.copy()
    out = out.reshape(-1, 4)
    out[:, 0::2] += shift_x
    out[:, 1::2] += shift_y
    return out


class RandomShift:
    """Official YOLOF ``RandomShift`` (cvpods transform_gen.py) with a per-worker rng.

    Draw order (identical to the official code): ``do = uniform(0, 1) < prob``; if
    not ``do``: no-op and no further draws. Otherwise ``shift_x = randint(-max_shifts,
    max_shifts)`` then ``shift_y = randint(-max_shifts, max_shifts)``, upper bound
    EXCLUSIVE, so each shift is in ``[-max_shifts, max_shifts - 1]`` ([-32, 31]).
    Then :func:`shift_image_and_boxes`. Note the official constructor order is
    ``(prob, max_shifts)``; this one is ``(max_shifts, prob)`` - pass keywords.
    """

    def __init__(self, max_shifts: int = 32, prob: float = 0.5):
        if max_shifts < 1:
            raise ValueError(f"max_shifts must be >= 1, got {max_shifts}")
        self.max_shifts = int(max_shifts)
        self.prob = prob

    def sample(self, rng: RNG) -> Optional[tuple[int, int]]:
        """Draw like the official ``get_transform``: None (no-op) or (shift_x, shift_y)."""
        if not _uniform01(rng) < self.prob:
            return None
        shift_x = _randint(rng, -self.max_shifts, self.max_shifts)
        shift_y = _randint(rng, -self.max_shifts, self.max_shifts)
        return shift_x, shift_y

    def __call__(self, image: np.ndarray, target: Target, rng: RNG):
        shift = self.sample(rng)
        if shift is None:
            return image, target
        sx, sy = shift
        image, _ = shift_image_and_boxes(image, None, sx, sy)
        target = _map_boxes(target, lambda b: _shift_boxes(b, sx, sy))
        return image, target

    def __repr__(self) -> str:
        return f"RandomShift(max_shifts={self.max_shifts}, prob={self.prob})"


class ClipAndFilterBoxes:
    """Official ``annotations_to_instances`` clip + ``filter_empty_instances``.

    Boxes are first cast to float32 (the official code does this when building
    ``Boxes``), clamped to x in [0, W], y in [0, H], and boxes with
    ``x2 - x1 <= 0`` or ``y2 - y1 <= 0`` (threshold 0, strict ``>`` to keep) are
    dropped together with the matching entries of every per-box array.
    ``crowd_boxes`` are clipped and filtered on their own.
    """

    def __call__(self, image: np.ndarray, target: Target, rng: RNG = None):
        h, w = image.shape[:2]
        out = dict(target)

        def clip_keep(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
            if not np.isfinite(b).all():
                raise ValueError("box tensor contains infinite or NaN values")
            b = clip_boxes(b, h, w)
            keep = ((b[:, 2] - b[:, 0]) > 0) & ((b[:, 3] - b[:, 1]) > 0)
            return b, keep

        per_box = _per_box_keys(target)
        boxes, keep = clip_keep(target["boxes"])
        out["boxes"] = boxes[keep]
        for key in per_box:
            out[key] = np.asarray(target[key])[keep]
        for key in _INDEPENDENT_KEYS:
            if key in target and target[key] is not None:
                cb, ckeep = clip_keep(target[key])
                out[key] = cb[ckeep]
        return image, out

    def __repr__(self) -> str:
        return "ClipAndFilterBoxes()"


def flip_shift_steps(flip_prob: float, shift_max: int, shift_prob: float, random_shift: bool = True) -> list:
    """RandomFlip(flip_prob) [if > 0], then RandomShift(shift_max, shift_prob) [if on and > 0]: the official
    augmentation after the resize, shared by every pipeline (data/pipelines.py)."""
    steps: list = [RandomFlip(flip_prob)] if flip_prob > 0 else []
    if random_shift and shift_prob > 0:
        steps.append(RandomShift(max_shifts=shift_max, prob=shift_prob))
    return steps


def build_transforms(is_train: bool, min_size: Union[int, Sequence[int]] = (800,), max_size: int = 1333, *,
                     flip_prob: float = 0.5, shift_max: int = 32, shift_prob: float = 0.5,
                     random_shift: bool = True) -> Compose:
    """The official YOLOF pipelines.

    train: ResizeShortestEdge(min_size, max_size, "choice") -> RandomFlip(flip_prob)
           -> RandomShift(shift_max, shift_prob) [if random_shift] -> ClipAndFilterBoxes
    test:  ResizeShortestEdge(min_size, max_size) -> ClipAndFilterBoxes
           (min_size must be one int or a 1-sequence at test time).
    """
    if isinstance(min_size, (int, np.integer)):
        min_size = (int(min_size),)
    min_size = tuple(int(s) for s in min_size)
    if is_train:
        ts: list = [ResizeShortestEdge(min_size, max_size, sample_style="choice"),
                    *flip_shift_steps(flip_prob, shift_max, shift_prob, random_shift)]
    else:
        if len(min_size) != 1:
            raise ValueError(f"test-time min_size must be a single size, got {min_size}")
        ts = [ResizeShortestEdge(min_size, max_size, sample_style="choice")]
    ts.append(ClipAndFilterBoxes())
    return Compose(ts)
