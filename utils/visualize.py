"""Drawing helpers for detections and anchor assignments (OpenCV, numpy only).

All functions take a BGR ``uint8`` HxWx3 image and return a **new** image
(the input is never modified). Boxes are ``(N, 4)`` ``xyxy`` in pixels of
that image (numpy arrays, lists, or CPU tensors -- anything ``np.asarray``
accepts); they are rounded to the nearest pixel and the rectangle outline is
drawn on the pixel rows / columns ``round(x1) .. round(x2)`` and
``round(y1) .. round(y2)`` (clipped to the image), growing inwards for
thicker lines.
"""
from __future__ import annotations

import colorsys
from typing import Any, Sequence

import cv2
import numpy as np

__all__ = [
    "class_color",
    "draw_boxes",
    "draw_detections",
    "draw_anchor_assignment",
    "draw_tagged_boxes",
    "draw_legend",
]

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_GOLDEN = 0.618033988749895


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_image(image: Any) -> np.ndarray:
    img = _np(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be a uint8 HxWx3 BGR array, got dtype {img.dtype} shape {img.shape}")
    return np.ascontiguousarray(img).copy()


def _boxes(boxes: Any) -> np.ndarray:
    a = _np(boxes)
    return a.astype(np.float64).reshape(-1, 4) if a.size else np.zeros((0, 4))


def class_color(label: int, seed: int = 0) -> tuple[int, int, int]:
    """Deterministic, well separated BGR colour of a class index.

    Hues follow the golden-ratio sequence (offset by ``seed``), with high
    saturation and value, so consecutive classes get very different colours.
    """
    h = (int(label) * _GOLDEN + int(seed) * 0.1234567) % 1.0
    s = 0.85 if int(label) % 2 == 0 else 0.65
    r, g, b = colorsys.hsv_to_rgb(h, s, 0.95)
    return int(round(b * 255)), int(round(g * 255)), int(round(r * 255))


def _rect(img: np.ndarray, box: np.ndarray, color, thickness: int) -> tuple[int, int, int, int] | None:
    h, w = img.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    if x2 < x1:
        x1, x2 = x2, x1
    if y2 < y1:
        y1, y2 = y2, y1
    if x2 < 0 or y2 < 0 or x1 >= w or y1 >= h:
        return None
    x1, y1 = max(x1, 0), max(y1, 0)
    x2, y2 = min(x2, w - 1), min(y2, h - 1)
    t = max(int(thickness), 1)
    # filled strips instead of cv2.rectangle(thickness=t): the outline stays
    # inside [x1, x2] x [y1, y2] for any thickness
    color = tuple(int(c) for c in color)
    cv2.rectangle(img, (x1, y1), (x2, min(y1 + t - 1, y2)), color, -1)
    cv2.rectangle(img, (x1, max(y2 - t + 1, y1)), (x2, y2), color, -1)
    cv2.rectangle(img, (x1, y1), (min(x1 + t - 1, x2), y2), color, -1)
    cv2.rectangle(img, (max(x2 - t + 1, x1), y1), (x2, y2), color, -1)
    return x1, y1, x2, y2


def _text_color(bg: Sequence[int]) -> tuple[int, int, int]:
    b, g, r = bg
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def _label(img: np.ndarray, text: str, x: int, y_top: int, y_bottom: int, color, font_scale: float) -> None:
    """Text on a filled box above (x, y_top), or just below it if no room."""
    h, w = img.shape[:2]
    thick = 1
    (tw, th), base = cv2.getTextSize(text, _FONT, font_scale, thick)
    bh = th + base + 2
    top = y_top - bh if y_top - bh >= 0 else y_top  # inside the box if no room above
    top = min(max(top, 0), max(h - bh, 0))
    left = min(max(x, 0), max(w - tw - 2, 0))
    cv2.rectangle(img, (left, top), (left + tw + 1, top + bh - 1), tuple(int(c) for c in color), -1)
    cv2.putText(img, text, (left + 1, top + th + 1), _FONT, font_scale, _text_color(color), thick, cv2.LINE_AA)


def draw_boxes(
    image: Any, boxes: Any, color: Sequence[int] = (0, 255, 0), thickness: int = 1
) -> np.ndarray:
    """Outline ``boxes`` (N, 4 xyxy) in one BGR ``color``; returns a new image."""
    img = _check_image(image)
    for b in _boxes(boxes):
        _rect(img, b, color, thickness)
    return img


def draw_detections(
    image_bgr: Any,
    boxes: Any,
    labels: Any,
    scores: Any = None,
    class_names: Sequence[str] | None = None,
    score_thresh: float = 0.0,
    color_seed: int = 0,
    thickness: int = 2,
    font_scale: float = 0.45,
    show_text: bool = True,
) -> np.ndarray:
    """Draw detections with a per-class colour and a ``"name 0.87"`` tag.

    Args:
        image_bgr: HxWx3 uint8 BGR image (not modified).
        boxes: (N, 4) xyxy pixels.
        labels: (N,) class indices (into ``class_names``).
        scores: (N,) or None (then no score in the tag, no thresholding).
        class_names: names for the tags; ``str(label)`` when None or out of range.
        score_thresh: detections with ``score < score_thresh`` are skipped.
        color_seed: changes the class -> colour mapping (deterministic).
        thickness: outline thickness in pixels.
        show_text: draw the tags.

    Lower scores are drawn first so the best detections end up on top.
    """
    img = _check_image(image_bgr)
    b = _boxes(boxes)
    lab = _np(labels).reshape(-1).astype(np.int64)
    if len(lab) != len(b):
        raise ValueError(f"{len(b)} boxes but {len(lab)} labels")
    sc = None
    if scores is not None:
        sc = _np(scores).reshape(-1).astype(np.float64)
        if len(sc) != len(b):
            raise ValueError(f"{len(b)} boxes but {len(sc)} scores")
    order = np.arange(len(b)) if sc is None else np.argsort(sc, kind="stable")
    for i in order:
        if sc is not None and sc[i] < score_thresh:
            continue
        color = class_color(lab[i], color_seed)
        drawn = _rect(img, b[i], color, thickness)
        if drawn is None or not show_text:
            continue
        k = int(lab[i])
        name = class_names[k] if class_names is not None and 0 <= k < len(class_names) else str(k)
        text = name if sc is None else f"{name} {sc[i]:.2f}"
        _label(img, text, drawn[0], drawn[1], drawn[3], color, font_scale)
    return img


def draw_tagged_boxes(
    image: Any,
    boxes: Any,
    tags: Sequence[str] | None,
    color: Sequence[int],
    thickness: int = 2,
    font_scale: float = 0.45,
) -> np.ndarray:
    """Outline ``boxes`` (N, 4 xyxy) in one BGR ``color``, each with its text tag (``tags[i]``; none when
    ``tags`` is None or the tag is empty); returns a new image."""
    img = _check_image(image)
    b = _boxes(boxes)
    if tags is not None and len(tags) != len(b):
        raise ValueError(f"{len(b)} boxes but {len(tags)} tags")
    for i, box in enumerate(b):
        drawn = _rect(img, box, color, thickness)
        if drawn is not None and tags is not None and tags[i]:
            _label(img, tags[i], drawn[0], drawn[1], drawn[3], color, font_scale)
    return img


def draw_legend(image: Any, entries: Sequence[tuple[str, Sequence[int]]]) -> np.ndarray:
    """A legend panel in the top-left corner: one colour swatch and text per ``(text, BGR colour)``."""
    img = _check_image(image)
    if entries:
        _legend(img, list(entries))
    return img


def draw_anchor_assignment(
    image: Any,
    gt_boxes: Any,
    positive_anchor_boxes: Any,
    ignored_anchor_boxes: Any = None,
    gt_color: Sequence[int] = (0, 255, 0),
    positive_color: Sequence[int] = (0, 0, 255),
    ignored_color: Sequence[int] = (160, 160, 160),
    legend: bool = True,
) -> np.ndarray:
    """Visualise an anchor assignment: gts (green, 2 px), positive anchors
    (red, 1 px) and optionally ignored anchors (grey, 1 px), with a legend
    box in the top-left corner giving the counts.

    Drawing order: ignored, positives, gts (gts on top).
    """
    img = _check_image(image)
    gts = _boxes(gt_boxes)
    pos = _boxes(positive_anchor_boxes)
    ign = _boxes(ignored_anchor_boxes) if ignored_anchor_boxes is not None else None
    if ign is not None:
        for bx in ign:
            _rect(img, bx, ignored_color, 1)
    for bx in pos:
        _rect(img, bx, positive_color, 1)
    for bx in gts:
        _rect(img, bx, gt_color, 2)
    if legend:
        entries = [(f"gt ({len(gts)})", gt_color), (f"positive anchors ({len(pos)})", positive_color)]
        if ign is not None:
            entries.append((f"ignored anchors ({len(ign)})", ignored_color))
        _legend(img, entries)
    return img


def _legend(img: np.ndarray, entries: list[tuple[str, Sequence[int]]], font_scale: float = 0.45) -> None:
    pad, sw = 4, 12
    sizes = [cv2.getTextSize(t, _FONT, font_scale, 1) for t, _ in entries]
    line_h = max(max(s[0][1] + s[1] for s in sizes), sw) + pad
    width = pad * 3 + sw + max(s[0][0] for s in sizes)
    height = pad + line_h * len(entries)
    h, w = img.shape[:2]
    x2, y2 = min(width, w - 1), min(height, h - 1)
    # darkened translucent panel so the legend is readable on any image
    img[0 : y2 + 1, 0 : x2 + 1] = (img[0 : y2 + 1, 0 : x2 + 1].astype(np.float32) * 0.35).astype(np.uint8)
    for i, ((text, color), ((tw, th), base)) in enumerate(zip(entries, sizes)):
        y = pad + i * line_h
        cv2.rectangle(img, (pad, y), (pad + sw - 1, y + sw - 1), tuple(int(c) for c in color), -1)
        cv2.putText(img, text, (2 * pad + sw, y + sw - 1), _FONT, font_scale, (255, 255, 255), 1, cv2.LINE_AA)
