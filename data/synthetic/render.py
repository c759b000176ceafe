"""One synthetic image: shapes in random colours over a varied background, with boxes tight to what is visible.

Backgrounds are a flat colour, a linear gradient or a smooth noise texture, with optional clutter lines and pixel
noise. Shapes (:mod:`data.synthetic.shapes`) are rasterised with OpenCV (``cv2.fillPoly``) on a 4x super-sampled grid
and area-averaged down: anti-aliased edges whose coverage matches the geometry (OpenCV's own ``LINE_AA`` polygon
fill is not sub-pixel exact in y).

Boxes come from the geometry (the polygon's vertices) clipped to the image. Later objects are drawn over earlier
ones; a new object is rejected (another position and size are tried) when it would leave an earlier object with
less than ``min_visible`` of its pixels visible or change the extent of its visible pixels, so that every box stays
tight to what is visible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import cv2
import numpy as np

from data.synthetic.shapes import SHAPE_CLASSES, clip_polygon, inset_polygon, loguniform, make_shape, polygon_area

MAX_BOX_FRACTION = 0.6  # ObjectSizes.max_box 0: objects up to this fraction of the image's short side
_SUPERSAMPLE = 4
_SHIFT = 4  # OpenCV fixed-point fraction bits for drawing coordinates
_PAD = 3  # pixels around a box that its raster crop covers


@dataclass(frozen=True)
class ObjectSizes:
    """Objects drawn from ranges (``data.synthetic``): how many to try, and their size ``sqrt(w * h)`` in pixels
    before clipping, log-uniform in [min_box, max_box] (``max_box`` 0: ``MAX_BOX_FRACTION`` x the short side)."""

    num_objects: tuple[int, int]
    min_box: float
    max_box: float = 0.0


@dataclass(frozen=True)
class RenderRules:
    """How an image is drawn and which placements are accepted (the same for every image of a dataset)."""

    backgrounds: tuple[str, ...] = ("flat", "gradient", "noise")  # the kinds one is drawn from
    clutter_prob: float = 0.3  # probability of 1-4 random lines on the background
    noise_prob: float = 0.25  # probability of Gaussian pixel noise over the final image
    min_visible: float = 0.55  # every object keeps at least this fraction of its pixels visible
    max_iou: float = 0.5  # largest IoU of two boxes (near-duplicates, which NMS would merge, stay out)
    max_truncation: float = 0.35  # largest fraction of an object's area outside the image
    min_contrast: float = 70.0  # aimed 10th-percentile BGR distance of an object's colour to the pixels around it
    max_tries: int = 30  # placements tried per object before it is dropped


# ----------------------------------------------------------------------------- backgrounds
def _background(rng: np.random.Generator, h: int, w: int, kind: str) -> np.ndarray:
    if kind == "flat":
        img = np.empty((h, w, 3), np.float32)
        img[:] = rng.uniform(0, 255, 3)
    elif kind == "gradient":
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        th = rng.uniform(0, 2 * np.pi)
        t = (np.arange(w, dtype=np.float32)[None, :] * math.cos(th)
             + np.arange(h, dtype=np.float32)[:, None] * math.sin(th))
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        img = c0[None, None].astype(np.float32) + t[..., None] * (c1 - c0)[None, None].astype(np.float32)
    elif kind == "noise":
        g = int(rng.integers(2, 7))
        amp = rng.uniform(30, 90)
        base = rng.uniform(amp / 2, 255 - amp / 2, 3)
        grid = (rng.random((g, g, 3)) - 0.5) * amp + base
        img = cv2.resize(grid.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        img += rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(rng.uniform(2, 8))
    else:
        raise ValueError(f"unknown background {kind!r}")
    img = img.astype(np.float32, copy=False)
    return np.clip(img, 0, 255, out=img)


def _clutter(rng: np.random.Generator, img: np.ndarray) -> None:
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(1, 5))):
        p0 = rng.uniform([-0.2 * w, -0.2 * h], [1.2 * w, 1.2 * h])
        p1 = rng.uniform([-0.2 * w, -0.2 * h], [1.2 * w, 1.2 * h])
        color = tuple(float(c) for c in rng.uniform(0, 255, 3))
        pts = np.round(np.stack([p0, p1]) * (1 << _SHIFT)).astype(np.int64)
        cv2.line(img, tuple(int(v) for v in pts[0]), tuple(int(v) for v in pts[1]), color,
                 int(rng.integers(1, 3)), cv2.LINE_AA, _SHIFT)


# ----------------------------------------------------------------------------- one object
def _rasterize(poly: np.ndarray, stroke: float, x0: int, y0: int, cw: int, ch: int) -> np.ndarray:
    """Anti-aliased coverage (float32 in [0, 1]) of the shape over the crop
    [x0, x0+cw) x [y0, y0+ch), by 4x super-sampling."""
    s = _SUPERSAMPLE
    canvas = np.zeros((ch * s, cw * s), np.uint8)
    # continuous coord x -> super-sampled pixel-centre coord x*s - 0.5
    pts = np.round(((poly - [x0, y0]) * s - 0.5) * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(canvas, [pts], 255, cv2.LINE_8, _SHIFT)
    if stroke > 0:  # hollow out: the stroke lies inside the outer boundary
        inner = inset_polygon(poly, stroke)
        ipts = np.round(((inner - [x0, y0]) * s - 0.5) * (1 << _SHIFT)).astype(np.int32)
        cv2.fillPoly(canvas, [ipts], 0, cv2.LINE_8, _SHIFT)
    cov = cv2.resize(canvas.astype(np.float32) * (1.0 / 255.0), (cw, ch), interpolation=cv2.INTER_AREA)
    return cov


def _pick_color(rng: np.random.Generator, ring_pixels: np.ndarray, min_contrast: float) -> tuple[np.ndarray, float]:
    cands = rng.uniform(0, 255, (24, 3)).astype(np.float32)
    if len(ring_pixels) == 0:
        return cands[0], float("inf")
    if len(ring_pixels) > 512:
        ring_pixels = ring_pixels[:: int(math.ceil(len(ring_pixels) / 512))]
    d2 = ((cands[:, None, :] - ring_pixels[None, :, :]) ** 2).sum(2)  # (24, P)
    k = len(ring_pixels) // 10  # 10th percentile of the distances
    score = np.sqrt(np.partition(d2, k, axis=1)[:, k])
    ok = np.nonzero(score >= min_contrast)[0]
    i = int(ok[0]) if len(ok) else int(np.argmax(score))
    return cands[i], float(score[i])


@dataclass
class _Obj:
    """A placed object: its box, label, raster crop, visible pixel count and pixel box (relative to the crop)."""

    box: tuple[float, float, float, float]
    label: int
    crop: tuple[int, int, int, int]
    npix: int
    pix_box: tuple[int, int, int, int]
    area: float


@dataclass
class _Candidate:
    """One placement of a shape that passed the geometric checks, before it is painted."""

    poly: np.ndarray
    stroke: float
    box: tuple[float, float, float, float]
    area: float  # the silhouette clipped to the image
    crop: tuple[int, int, int, int]
    cov: np.ndarray  # coverage over the crop
    mask: np.ndarray  # cov >= 0.5


def _mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, cols = np.any(mask, 1), np.any(mask, 0)
    if not rows.any():
        return None
    r = np.nonzero(rows)[0]
    c = np.nonzero(cols)[0]
    return int(c[0]), int(r[0]), int(c[-1]) + 1, int(r[-1]) + 1


def _draw_shape(rng: np.random.Generator, label: int, size: Union[ObjectSizes, tuple[float, float]],
                w: int, h: int) -> tuple[np.ndarray, float]:
    """The polygon and stroke of a shape moved to a random position: a size drawn from ``size``'s range, or the
    extent ``size`` (w, h) given, which is taken as measured, i.e. the visible part of an object: the shape then lies
    inside the image (at most its size) and is not truncated."""
    if isinstance(size, ObjectSizes):
        lo, hi = size.min_box, size.max_box
        poly, stroke = make_shape(rng, label, loguniform(rng, lo, hi) if hi > lo else lo)
    else:
        poly, stroke = make_shape(rng, label, 0.0, wh=size)
    ext = poly.max(0) - poly.min(0)
    # keep every shape within 90% of the image side (a given extent: within the image)
    cap = 0.9 if isinstance(size, ObjectSizes) else 1.0
    scale = min(1.0, cap * w / ext[0], cap * h / ext[1])
    if scale < 1.0:
        poly, stroke, ext = poly * scale, stroke * scale, ext * scale
    lo = poly.min(0)
    if isinstance(size, ObjectSizes):  # a little truncation at the image border is allowed
        tx = rng.uniform(-0.25 * ext[0], w - 0.75 * ext[0]) - lo[0]
        ty = rng.uniform(-0.25 * ext[1], h - 0.75 * ext[1]) - lo[1]
    else:  # clipping would shrink the measured box again
        tx = rng.uniform(0, max(0.0, w - ext[0])) - lo[0]  # max: ext may exceed w by rounding
        ty = rng.uniform(0, max(0.0, h - ext[1])) - lo[1]
    return poly + [tx, ty], stroke


def _place(rng: np.random.Generator, label: int, size, objs: list[_Obj], w: int, h: int,
           rules: RenderRules) -> Optional[_Candidate]:
    """A shape at a random position whose box is inside the image enough, large enough and overlaps no earlier box
    too much (None: this try failed)."""
    poly, stroke = _draw_shape(rng, label, size, w, h)
    clipped = clip_polygon(poly, w, h)
    area = polygon_area(clipped)  # 0 with fewer than 3 vertices
    if area < (1 - rules.max_truncation) * polygon_area(poly):
        return None
    bx0, by0 = np.clip(clipped.min(0), 0, [w, h])
    bx1, by1 = np.clip(clipped.max(0), 0, [w, h])
    if bx1 - bx0 < 4 or by1 - by0 < 4:
        return None
    if objs and rules.max_iou < 1.0:
        ob = np.array([o.box for o in objs])
        iw = np.clip(np.minimum(ob[:, 2], bx1) - np.maximum(ob[:, 0], bx0), 0, None)
        ih = np.clip(np.minimum(ob[:, 3], by1) - np.maximum(ob[:, 1], by0), 0, None)
        inter = iw * ih
        union = (ob[:, 2] - ob[:, 0]) * (ob[:, 3] - ob[:, 1]) + (bx1 - bx0) * (by1 - by0) - inter
        if (inter > rules.max_iou * union).any():
            return None
    # raster crop = box + pad, inside the image
    cx0, cy0 = max(0, int(math.floor(bx0)) - _PAD), max(0, int(math.floor(by0)) - _PAD)
    cx1, cy1 = min(w, int(math.ceil(bx1)) + _PAD), min(h, int(math.ceil(by1)) + _PAD)
    cov = _rasterize(poly, stroke, cx0, cy0, cx1 - cx0, cy1 - cy0)
    mask = cov >= 0.5
    if int(mask.sum()) < 8:
        return None
    return _Candidate(poly, stroke, (bx0, by0, bx1, by1), area, (cx0, cy0, cx1, cy1), cov, mask)


def _keeps_earlier_objects_visible(c: _Candidate, objs: list[_Obj], owner: np.ndarray, min_visible: float) -> bool:
    """Whether every earlier object keeps ``min_visible`` of its pixels and the extent of its visible pixels."""
    cx0, cy0, cx1, cy1 = c.crop
    for j, o in enumerate(objs):
        ox0, oy0, ox1, oy1 = o.crop
        ix0, iy0, ix1, iy1 = max(ox0, cx0), max(oy0, cy0), min(ox1, cx1), min(oy1, cy1)
        if ix0 >= ix1 or iy0 >= iy1:
            continue
        vis = owner[oy0:oy1, ox0:ox1] == j
        sub_new = c.mask[iy0 - cy0:iy1 - cy0, ix0 - cx0:ix1 - cx0]
        sub_vis = vis[iy0 - oy0:iy1 - oy0, ix0 - ox0:ix1 - ox0]
        if not (sub_vis & sub_new).any():
            continue
        sub_vis &= ~sub_new  # writes through the view into `vis`
        if vis.sum() < min_visible * o.npix:
            return False
        vb = _mask_bbox(vis)
        if vb is None or any(abs(a - b) > 1 for a, b in zip(vb, o.pix_box)):
            return False
    return True


def _paint(rng: np.random.Generator, c: _Candidate, label: int, img: np.ndarray, owner: np.ndarray,
           objs: list[_Obj], min_contrast: float) -> bool:
    """Composite the shape in a colour that stands out from what is just around its edges (False: no colour does
    enough, nothing painted)."""
    cx0, cy0, cx1, cy1 = c.crop
    ring = cv2.dilate(c.mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2).astype(bool) & ~c.mask
    region_img = img[cy0:cy1, cx0:cx1]
    color, contrast = _pick_color(rng, region_img[ring], min_contrast)
    if contrast < 0.6 * min_contrast:
        return False
    a = c.cov[..., None]
    region_img *= 1.0 - a
    region_img += a * color.astype(np.float32)
    owner[cy0:cy1, cx0:cx1][c.mask] = len(objs)
    mb = _mask_bbox(c.mask)  # the pixel box, relative to the crop, for the later objects' checks
    objs.append(_Obj(c.box, label, c.crop, int(c.mask.sum()), mb, c.area))
    return True


# ----------------------------------------------------------------------------- the image
def render_sample(rng: np.random.Generator, image_size: tuple[int, int],
                  objects: Union[ObjectSizes, Sequence[tuple[float, float]]], rules: RenderRules = RenderRules(), *,
                  return_areas: bool = False) -> tuple[np.ndarray, ...]:
    """Render one synthetic image of ``image_size`` (h, w) pixels.

    ``objects``: an :class:`ObjectSizes` (a number of objects and their sizes drawn here), or the extent (w, h) in
    pixels of each object to try, in drawing order (:func:`data.synthetic.scenes.draw_scene`). An object that finds
    no placement within ``rules.max_tries`` (occlusion, contrast) is dropped, so rarely fewer appear. ``rng`` is the
    only source of randomness: the same generator state gives the same image.

    Returns the image (H, W, 3) uint8 BGR, boxes (N, 4) float32 xyxy (continuous pixel coordinates, clipped to the
    image), labels (N,) int64 in [0, len(SHAPE_CLASSES)), and with ``return_areas`` each object's area (N,) float32:
    its silhouette (the filled outer boundary) clipped to the image, as COCO's ``area`` is its mask's.
    """
    h, w = int(image_size[0]), int(image_size[1])
    if isinstance(objects, ObjectSizes):
        max_box = objects.max_box or MAX_BOX_FRACTION * min(h, w)
        objects = ObjectSizes(objects.num_objects, float(objects.min_box), float(max(max_box, objects.min_box)))
    kind = str(rules.backgrounds[int(rng.integers(len(rules.backgrounds)))])
    img = _background(rng, h, w, kind)
    if rules.clutter_prob > 0 and rng.random() < rules.clutter_prob:
        _clutter(rng, img)

    owner = np.full((h, w), -1, np.int32)  # which object shows at each pixel
    objs: list[_Obj] = []
    if isinstance(objects, ObjectSizes):
        sizes = [objects] * int(rng.integers(objects.num_objects[0], objects.num_objects[1] + 1))
    else:
        sizes = list(objects)
    for size in sizes:
        label = int(rng.integers(len(SHAPE_CLASSES)))
        for _try in range(rules.max_tries):
            c = _place(rng, label, size, objs, w, h, rules)
            if (c is not None and _keeps_earlier_objects_visible(c, objs, owner, rules.min_visible)
                    and _paint(rng, c, label, img, owner, objs, rules.min_contrast)):
                break

    if rules.noise_prob > 0 and rng.random() < rules.noise_prob:
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(2, 6))
    np.clip(img, 0, 255, out=img)
    image = np.rint(img, out=img).astype(np.uint8)
    boxes = np.array([o.box for o in objs], dtype=np.float32).reshape(-1, 4)
    labels = np.array([o.label for o in objs], dtype=np.int64)
    if return_areas:
        return image, boxes, labels, np.array([o.area for o in objs], dtype=np.float32)
    return image, boxes, labels
