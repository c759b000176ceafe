"""The shapes of the synthetic dataset as float polygons: five classes that differ by shape and fill style (filled
vs. outlined), never only by colour.

Coordinates are continuous pixel coordinates: pixel ``(row i, col j)`` covers ``[j, j+1) x [i, i+1)``; boxes are
``xyxy`` in that frame (COCO ``[x, y, w, h]`` uses the same frame). An outlined shape is its outer polygon minus the
polygon inset by the stroke width, so its stroke lies inside the outer boundary and its box is the outer one's.
"""
from __future__ import annotations

import math

import numpy as np

SHAPE_CLASSES: tuple[str, ...] = (
    "rectangle",
    "ellipse",
    "triangle",
    "outlined_rectangle",
    "outlined_ellipse",
)


def _rotate(pts: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


def polygon_area(p: np.ndarray) -> float:
    if len(p) < 3:
        return 0.0
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def clip_polygon(poly: np.ndarray, w: float, h: float) -> np.ndarray:
    """Sutherland-Hodgman clip of a polygon to the rectangle [0, w] x [0, h]."""
    if poly[:, 0].min() >= 0 and poly[:, 1].min() >= 0 and poly[:, 0].max() <= w and poly[:, 1].max() <= h:
        return poly
    out = [tuple(p) for p in poly]
    # (axis, bound, keep_if_greater)
    for axis, bound, keep_ge in ((0, 0.0, True), (0, w, False), (1, 0.0, True), (1, h, False)):
        if not out:
            break
        inp, out = out, []

        def inside(p, axis=axis, bound=bound, keep_ge=keep_ge):
            return p[axis] >= bound if keep_ge else p[axis] <= bound

        prev = inp[-1]
        for cur in inp:
            cin, pin = inside(cur), inside(prev)
            if cin != pin:
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
            if cin:
                out.append(cur)
            prev = cur
    return np.asarray(out, dtype=np.float64).reshape(-1, 2)


def inset_polygon(poly: np.ndarray, d: float) -> np.ndarray:
    """Convex polygon shrunk by distance ``d`` (every edge moved inwards by ``d``;
    valid while no edge vanishes, which the stroke limits in :func:`make_shape` ensure)."""
    twice_area = float(np.sum(poly[:, 0] * np.roll(poly[:, 1], -1) - np.roll(poly[:, 0], -1) * poly[:, 1]))
    orient = 1.0 if twice_area > 0 else -1.0
    e = np.roll(poly, -1, axis=0) - poly  # edge i: p_i -> p_{i+1}
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    n = orient * np.stack([-e[:, 1], e[:, 0]], 1)  # inward normals
    c = np.sum(n * poly, 1) + d  # shifted lines n_i . x = c_i
    # vertex i of the inset = intersection of shifted lines i-1 and i
    n0, c0 = np.roll(n, 1, axis=0), np.roll(c, 1)
    det = n0[:, 0] * n[:, 1] - n0[:, 1] * n[:, 0]
    x = (c0 * n[:, 1] - c * n0[:, 1]) / det
    y = (n0[:, 0] * c - n[:, 0] * c0) / det
    return np.stack([x, y], 1)


def loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def make_shape(rng: np.random.Generator, label: int, size: float,
                wh: tuple[float, float] | None = None) -> tuple[np.ndarray, float]:
    """Centred polygon (float, continuous coords) and stroke width (0 = filled).

    ``size`` is sqrt(w * h) of a shape whose aspect ratio is drawn here; ``wh`` instead gives the exact extent
    (w, h) of the shape (its box before clipping): rectangles are then axis-aligned and rotated ellipses are
    stretched back to it (an ellipse stays an ellipse).
    """
    name = SHAPE_CLASSES[label]
    outlined = name.startswith("outlined_")
    base = name.replace("outlined_", "")
    if wh is not None:
        w, h = float(wh[0]), float(wh[1])
    else:
        if base == "triangle":
            ar = loguniform(rng, 1 / 2.0, 2.0)
        else:
            ar = loguniform(rng, 1 / 2.5, 2.5)
        w, h = size * math.sqrt(ar), size / math.sqrt(ar)
    if base == "rectangle":
        poly = np.array([[-w, -h], [w, -h], [w, h], [-w, h]], dtype=np.float64) / 2
        if wh is None and rng.random() < 0.5:
            poly = _rotate(poly, math.radians(rng.uniform(-30, 30)))
    elif base == "ellipse":
        n = 128
        t = np.arange(n) * (2 * np.pi / n)
        # 128-gon: deviates from the true ellipse by < 0.04 px at the largest sizes
        poly = np.stack([np.cos(t) * w / 2, np.sin(t) * h / 2], 1)
        poly = _rotate(poly, rng.uniform(0, np.pi))
    elif base == "triangle":
        start = rng.uniform(0, 2 * np.pi)
        ang = start + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.35, 0.35, 3)
        poly = np.stack([np.cos(ang), np.sin(ang)], 1)
        lo, hi = poly.min(0), poly.max(0)
        poly = (poly - (lo + hi) / 2) / (hi - lo) * np.array([w, h])
    else:  # pragma: no cover
        raise ValueError(name)
    if wh is not None and base == "ellipse":  # rotated: stretch its extent back to (w, h)
        poly = poly * (np.array([w, h]) / (poly.max(0) - poly.min(0)))
    stroke = 0.0
    if outlined:
        ext = poly.max(0) - poly.min(0)
        stroke = max(1.5, rng.uniform(0.08, 0.16) * float(min(ext)))
        if base == "ellipse":  # stay below the smallest radius of curvature b^2/a
            a_, b_ = max(w, h) / 2, min(w, h) / 2
            if wh is not None:  # the stretched ellipse's semi-axes: its equally spaced vertices have covariance
                b_, a_ = np.sqrt(2 * np.linalg.eigvalsh(np.cov(poly.T, bias=True)))  # diag(a^2, b^2) / 2 rotated
            stroke = min(stroke, 0.8 * b_ * b_ / a_)
    return poly, stroke
