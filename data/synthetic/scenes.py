"""What a synthetic scene holds before it is drawn: the image's size and the extent of each object.

Two ways: the shapes' own ranges (``data.synthetic.image_size`` or a size drawn from ``size_range`` by
:func:`draw_image_size`, then objects of ``num_objects`` / ``min_box`` / ``max_box``, drawn while rendering), or a
table of COCO's statistics (``data.synthetic.stats: coco``): :func:`draw_scene` draws each image's shape, its number
of objects and every box's size and shape from :data:`COCO_STATS`, measured by ``tools/coco_stats.py`` (the design
and the numbers are in ablations/README.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Histogram:
    """Bins ``[edges[i], edges[i + 1])`` holding the fractions ``p[i]`` of the values (values outside the edges
    are counted in the first or last bin). A draw picks a bin by its fraction, then a value inside it: uniform in
    log (sizes and aspect ratios) or a uniform integer (counts)."""

    edges: tuple[float, ...]
    p: tuple[float, ...]


@dataclass(frozen=True)
class SceneStats:
    """What a scene is drawn from: the image's shape, how many objects it holds, and each object's box."""

    long_side: int  # every image's long side in pixels
    image_aspects: tuple[float, ...]  # the shapes w / h images take (a measured image snaps to the nearest in log)
    image_aspect_p: tuple[float, ...]  # the fraction of images of each shape
    objects: Histogram  # objects per image, integer bins [lo, hi)
    size_groups: tuple[int, ...]  # object counts: row g of sizes holds the images with n in [groups[g], groups[g + 1])
    sizes: tuple[Histogram, ...]  # sqrt(box area / image area), a row per count group (crowds hold smaller objects)
    box_aspect: Histogram  # box h / w
    min_side: float  # drawn box sides are raised to this many pixels (smaller shapes cannot be told apart)


# COCO's statistics, measured by tools/coco_stats.py (``python -m tools.coco_stats --table`` prints this literal)
# on the 160 images of ../shared/data/coco_tiny (annotations/instances_{train,val}2017.json: 80 train2017 + 80
# val2017 images, 1503 boxes without iscrowd) and tests/assets/annotations/instances_val2017.json (its 7 images are
# among coco_tiny's val2017 ones, so they add none). ablations/README.md (synthetic_coco_stats) has the numbers.
COCO_STATS = SceneStats(
    long_side=640,
    image_aspects=(0.5625, 0.6667, 0.75, 1.0, 1.3333, 1.5, 1.7778),
    image_aspect_p=(0.013, 0.069, 0.138, 0.019, 0.362, 0.375, 0.025),
    objects=Histogram((1, 2, 3, 5, 9, 17, 33, 45),
                      (0.062, 0.156, 0.156, 0.194, 0.237, 0.169, 0.025)),
    size_groups=(1, 5, 17, 45),
    sizes=(
        Histogram((0.0078125, 0.015625, 0.03125, 0.0625, 0.125, 0.25, 0.5, 1.0),
                  (0.000, 0.028, 0.062, 0.090, 0.208, 0.340, 0.271)),
        Histogram((0.0078125, 0.015625, 0.03125, 0.0625, 0.125, 0.25, 0.5, 1.0),
                  (0.013, 0.090, 0.133, 0.247, 0.266, 0.186, 0.064)),
        Histogram((0.0078125, 0.015625, 0.03125, 0.0625, 0.125, 0.25, 0.5, 1.0),
                  (0.033, 0.124, 0.311, 0.257, 0.179, 0.082, 0.015)),
    ),
    box_aspect=Histogram((0.0625, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
                         (0.005, 0.015, 0.105, 0.297, 0.332, 0.218, 0.027)),
    min_side=6.0,
)

# every data.synthetic.stats: name -> the table scenes are drawn from (none: the shapes' own ranges, data.synthetic.*)
SCENE_STATS: dict[str, SceneStats | None] = {"none": None, "coco": COCO_STATS}


def _draw_bins(rng: np.random.Generator, hist: Histogram, n: int) -> np.ndarray:
    """``n`` bin indices drawn by the bins' fractions."""
    return rng.choice(len(hist.p), size=n, p=np.asarray(hist.p) / np.sum(hist.p))


def _draw_log_uniform(rng: np.random.Generator, hist: Histogram, n: int) -> np.ndarray:
    """``n`` values: a bin by its fraction, then uniform in log inside it."""
    i = _draw_bins(rng, hist, n)
    lo, hi = np.log(np.asarray(hist.edges)[i]), np.log(np.asarray(hist.edges)[i + 1])
    return np.exp(lo + rng.random(n) * (hi - lo))


def draw_scene(rng: np.random.Generator, stats: SceneStats) -> tuple[tuple[int, int], list[tuple[float, float]]]:
    """A scene's image size (h, w) and the extent (w, h) of each of its objects, largest first (drawn first, so
    that smaller objects lie over larger ones, as they mostly do in photographs).

    The image takes one of ``stats.image_aspects`` at ``stats.long_side``; the number of objects n, then each box's
    sqrt(area) / sqrt(image area) from the row of n's group and its h / w, independently. A box that does not fit
    in the image redraws its h / w (up to 50 times; what is left is scaled down when drawn), so that the sizes
    follow the table; sides are raised to ``stats.min_side``.
    """
    ratio = stats.image_aspects[int(rng.choice(len(stats.image_aspects), p=np.asarray(stats.image_aspect_p)
                                               / np.sum(stats.image_aspect_p)))]
    long = stats.long_side
    h, w = (round(long / ratio), long) if ratio >= 1 else (long, round(long * ratio))
    i = int(_draw_bins(rng, stats.objects, 1)[0])
    n = int(rng.integers(stats.objects.edges[i], stats.objects.edges[i + 1]))
    group = min(int(np.searchsorted(stats.size_groups, n, side="right")) - 1, len(stats.sizes) - 1)
    side = _draw_log_uniform(rng, stats.sizes[group], n) * math.sqrt(h * w)  # sqrt(box area) in pixels
    aspect = np.sqrt(_draw_log_uniform(rng, stats.box_aspect, n))  # sqrt(h / w)
    for _ in range(50):  # a box must fit in the image: a large one takes another shape (not another size)
        wide, tall = side / aspect > w, side * aspect > h
        if not (wide | tall).any():
            break
        aspect = np.where(wide | tall, np.sqrt(_draw_log_uniform(rng, stats.box_aspect, n)), aspect)
    bw, bh = np.maximum(side / aspect, stats.min_side), np.maximum(side * aspect, stats.min_side)
    order = np.argsort(-(bw * bh), kind="stable")
    return (h, w), [(float(bw[j]), float(bh[j])) for j in order]


def draw_image_size(rng: np.random.Generator, size_range: Sequence[int], max_aspect: float) -> tuple[int, int]:
    """(h, w): each side uniform in ``size_range`` (inclusive), redrawn until long / short <= ``max_aspect``."""
    lo, hi = int(size_range[0]), int(size_range[1])
    while True:
        h, w = (int(v) for v in rng.integers(lo, hi + 1, size=2))
        if max(h, w) <= max_aspect * min(h, w):
            return h, w
