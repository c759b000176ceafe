"""The YOLO-style transforms of the official YOLOF-CSP-D-53 recipes (cvpods ``transform_gen.py``).

Official pipelines (``yolof.cspdarknet53.DC5.*``, cvpods transform names)::

    train: JitterCrop(jitter_ratio=0.3) -> Resize(shape=(640, 640), scale_jitter=(0.8, 1.2))
           -> RandomDistortion2(hue=0.1, saturation=1.5, exposure=1.5) -> RandomFlip() -> RandomShift(max_shifts=32)
           then, in the dataset, a 4-image mosaic with probability 0.5 (:mod:`data.mosaic`)
    test:  Resize(shape=(608, 608))

Same contract as :mod:`data.transforms`: ``t(image, target, rng) -> (image, target)``,
HWC images, XYXY boxes in absolute continuous pixels, new arrays returned. With a
``numpy.random.Generator`` the draws follow the official order and ranges; with a
legacy ``RandomState`` they are the very calls the official code makes on numpy's
global RNG (``randint``, ``uniform``, ``rand``).

Where this code deliberately differs from the official one (each a detail, none
changes the distribution of a training sample in a way a model could notice):

* interpolation is ``cv2.INTER_LINEAR`` (official: PIL bilinear), as in
  :class:`data.transforms.ResizeShortestEdge`;
* JitterCrop clips boxes to ``[0, W] x [0, H]`` of the crop (official: ``W - 1``,
  ``H - 1``, which shaves a pixel off boxes touching the right/bottom border);
* RandomDistortion converts with ``COLOR_BGR2HSV`` (the images here are BGR;
  the official code calls ``COLOR_RGB2HSV`` on its BGR images, which mirrors the
  direction of the hue shift, and the hue shift is symmetric) and wraps the hue
  modulo 180 (the official code wraps negative hues by +255 in OpenCV's 0-180 hue
  units, which turns a small negative shift of a red pixel into a jump of ~75).
"""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

from data.transforms import PAD_KEY, RNG, Target, _contiguous, _map_boxes, _randint, resize_to
from utils.boxes import clip_boxes

__all__ = ["JitterCrop", "Resize", "RandomDistortion"]


def _uniform(rng: RNG, low: float, high: float) -> float:
    """U[low, high); with a RandomState exactly ``np.random.uniform(low, high)``."""
    return float(rng.uniform(low, high))


def _rand(rng: RNG) -> float:
    """U[0, 1); with a RandomState exactly ``np.random.rand()``."""
    if isinstance(rng, np.random.RandomState):
        return float(rng.rand())
    return float(rng.random())


class JitterCrop:
    """YOLOv4's jitter crop (official cvpods ``JitterCrop`` + ``JitterCropTransform``).

    Each side of the image moves by an integer drawn in ``[-d, d)`` (``d = int(side *
    jitter_ratio)``, upper bound exclusive; draw order left, right, top, bottom):
    positive moves crop into the image, negative ones pad it. The output is
    ``(H - top - bottom) x (W - left - right)``, filled with the per-channel mean of
    the input (truncated to the image dtype) where it lies outside the input. Boxes
    move by ``(-left, -top)`` and are clipped to the output (empty ones are left for
    :class:`data.transforms.ClipAndFilterBoxes`). ``target["jitter_pad"]`` records
    the padding widths ``max(0, -move)`` for :class:`data.mosaic.Mosaic`.
    """

    def __init__(self, jitter_ratio: float = 0.3):
        if not 0.0 <= jitter_ratio < 0.5:
            raise ValueError(f"jitter_ratio must be in [0, 0.5) so that the crop is never empty, got {jitter_ratio}")
        self.jitter_ratio = float(jitter_ratio)

    def sample(self, h: int, w: int, rng: RNG) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) moves, drawn like the official ``get_transform``."""
        dw, dh = int(w * self.jitter_ratio), int(h * self.jitter_ratio)
        left, right = (_randint(rng, -dw, dw) if dw > 0 else 0 for _ in range(2))
        top, bottom = (_randint(rng, -dh, dh) if dh > 0 else 0 for _ in range(2))
        return left, right, top, bottom

    def __call__(self, image: np.ndarray, target: Target, rng: RNG):
        h, w = image.shape[:2]
        left, right, top, bottom = self.sample(h, w, rng)
        out_w, out_h = w - left - right, h - top - bottom
        fill = image.mean(axis=(0, 1)).astype(image.dtype)
        out = np.empty((out_h, out_w) + image.shape[2:], dtype=image.dtype)
        out[...] = fill
        # the input rectangle [max(left, 0), min(w - right, w)) lands at max(0, -left) in the output
        x0, x1, y0, y1 = max(left, 0), min(w - right, w), max(top, 0), min(h - bottom, h)
        dx, dy = max(0, -left), max(0, -top)
        out[dy:dy + y1 - y0, dx:dx + x1 - x0] = image[y0:y1, x0:x1]

        def crop(b: np.ndarray) -> np.ndarray:
            b = b.astype(np.float64).reshape(-1, 4) - np.array([left, top, left, top], dtype=np.float64)
            return clip_boxes(b, out_h, out_w)

        target = _map_boxes(target, crop)
        target[PAD_KEY] = (float(max(0, -left)), float(max(0, -top)), float(max(0, -right)), float(max(0, -bottom)))
        return out, target

    def __repr__(self) -> str:
        return f"JitterCrop(jitter_ratio={self.jitter_ratio})"


class Resize:
    """Resize to a fixed ``shape = (h, w)``, NOT keeping the aspect ratio (official cvpods ``Resize``).

    With ``scale_jitter = (lo, hi)`` the shape of each image is ``(int(h * s), int(w * s))``
    with ``s ~ U(lo, hi)`` (one draw). Boxes are scaled by ``new_w / W`` and ``new_h / H``
    separately, and so is the JitterCrop padding.
    """

    def __init__(self, shape: Sequence[int], scale_jitter: Optional[Sequence[float]] = None,
                 interp: int = cv2.INTER_LINEAR):
        if isinstance(shape, (int, np.integer)):
            shape = (int(shape), int(shape))
        shape = tuple(int(s) for s in shape)
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"shape must be (h, w) with positive sides, got {shape}")
        if scale_jitter is not None:
            scale_jitter = tuple(float(s) for s in scale_jitter)
            if len(scale_jitter) != 2 or not 0 < scale_jitter[0] <= scale_jitter[1]:
                raise ValueError(f"scale_jitter must be (low, high) with 0 < low <= high, got {scale_jitter}")
        self.shape, self.scale_jitter, self.interp = shape, scale_jitter, interp

    def output_shape(self, h: int, w: int) -> tuple[int, int]:
        """(h, w) every image is resized to without scale jitter (test time), whatever its size."""
        if self.scale_jitter is not None:
            raise ValueError(f"{self!r} samples its shape: the output shape is not a function of the input")
        return self.shape

    def sample_shape(self, rng: RNG) -> tuple[int, int]:
        if self.scale_jitter is None:
            return self.shape
        s = _uniform(rng, *self.scale_jitter)
        return int(self.shape[0] * s), int(self.shape[1] * s)

    def __call__(self, image: np.ndarray, target: Target, rng: RNG):
        return resize_to(image, target, self.sample_shape(rng), interp=self.interp)

    def __repr__(self) -> str:
        return f"Resize(shape={self.shape}, scale_jitter={self.scale_jitter})"


class RandomDistortion:
    """Random hue, saturation and exposure in HSV (official cvpods ``RandomDistortion2``).

    Draws, in order: ``dhue ~ U(-hue, hue)``; ``dsat = rand_scale(saturation)``;
    ``dexp = rand_scale(exposure)``, where ``rand_scale(s)`` is ``u ~ U(1, s)`` kept
    when a second draw ``U(0, 1) > 0.5`` and ``1 / u`` otherwise. Then, on OpenCV's
    8-bit HSV (H in 0..179): ``S *= dsat``, ``V *= dexp`` (clipped to 255),
    ``H += dhue * 179`` modulo 180 (``hue`` is a fraction of the hue circle, as in
    darknet), each truncated to an integer like the official ``astype(np.uint8)``.
    Only colours change: the image keeps its shape and the target is returned as is.
    Needs a 3-channel ``uint8`` BGR image.
    """

    def __init__(self, hue: float = 0.1, saturation: float = 1.5, exposure: float = 1.5):
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5] (a fraction of the hue circle), got {hue}")
        if saturation < 1.0 or exposure < 1.0:
            raise ValueError(f"saturation and exposure must be >= 1 (scales in [1/s, s]), got {saturation}, {exposure}")
        self.hue, self.saturation, self.exposure = float(hue), float(saturation), float(exposure)

    @staticmethod
    def _rand_scale(rng: RNG, upper: float) -> float:
        scale = _uniform(rng, 1.0, upper)
        return scale if _rand(rng) > 0.5 else 1.0 / scale

    def sample(self, rng: RNG) -> tuple[float, float, float]:
        """(dhue, dsat, dexp) in the official draw order."""
        dhue = _uniform(rng, -self.hue, self.hue)
        dsat = self._rand_scale(rng, self.saturation)
        dexp = self._rand_scale(rng, self.exposure)
        return dhue, dsat, dexp

    @staticmethod
    def distort(image: np.ndarray, dhue: float, dsat: float, dexp: float) -> np.ndarray:
        """Apply fixed factors to a uint8 BGR image (one lookup table per HSV channel)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"RandomDistortion needs an HxWx3 uint8 BGR image, got {image.dtype} {image.shape}")
        levels = np.arange(256, dtype=np.float32)
        lut_h = np.mod(levels + np.float32(dhue * 179.0), 180.0).astype(np.uint8)
        lut_s = (levels / 255.0 * np.float32(dsat) * 255.0).clip(0, 255).astype(np.uint8)
        lut_v = (levels / 255.0 * np.float32(dexp) * 255.0).clip(0, 255).astype(np.uint8)
        hsv = cv2.cvtColor(_contiguous(image), cv2.COLOR_BGR2HSV)
        hsv = np.stack([lut_h[hsv[..., 0]], lut_s[hsv[..., 1]], lut_v[hsv[..., 2]]], axis=-1)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)

    def __call__(self, image: np.ndarray, target: Target, rng: RNG):
        return self.distort(image, *self.sample(rng)), target

    def __repr__(self) -> str:
        return f"RandomDistortion(hue={self.hue}, saturation={self.saturation}, exposure={self.exposure})"
