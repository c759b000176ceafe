"""Scene statistics of COCO-format annotation files: the table behind ``data.synthetic.stats: coco``.

    python -m tools.coco_stats --table        # COCO's (coco_tiny + tests/assets): data/synthetic/scenes.py's COCO_STATS
    python -m tools.coco_stats data/synthetic_cache_coco/annotations/instances_train.json   # a generated split

Measured per image: its shape (w / h, snapped to the nearest of ``COCO_STATS.image_aspects`` in log) and its
number of boxes; per box (``iscrowd`` 0 only, as COCO's evaluation counts them): sqrt(box area / image area) in
the rows of the image's object-count group, and h / w; with the bins of :data:`data.synthetic.scenes.COCO_STATS`.
Images are counted once (by file name) when several files hold them. The report also gives COCO's size split
(small < 32^2 <= medium < 96^2 <= large, of the ``area`` field: the mask's area in COCO) and, without
``--table``, the total variation distance of every histogram to the table.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

if __package__ in (None, ""):  # python tools/<name>.py: the repository root on sys.path (tools/_bootstrap.py)
    import _bootstrap  # noqa: F401

from data.synthetic.scenes import COCO_STATS, Histogram, SceneStats
from utils.script import run_script
from utils.errors import UserError
from utils.paths import REPO_ROOT

DEFAULT_FILES = (REPO_ROOT.parent / "shared/data/coco_tiny/annotations/instances_train2017.json",
                 REPO_ROOT.parent / "shared/data/coco_tiny/annotations/instances_val2017.json",
                 REPO_ROOT / "tests/assets/annotations/instances_val2017.json")
AREA_SPLIT = (32 ** 2, 96 ** 2)  # COCO's small / medium / large limits (pycocotools' areaRng)


@dataclass
class Scene:
    """One image: (h, w), its boxes (N, 4) COCO [x, y, w, h] and their ``area`` (N,), crowd regions left out."""

    height: int
    width: int
    boxes: np.ndarray
    areas: np.ndarray


def load_scenes(paths: Sequence[str | Path]) -> list[Scene]:
    """The images of COCO annotation files, each once (the first file that holds its file name wins)."""
    scenes: dict[str, Scene] = {}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
            images, anns = data["images"], data["annotations"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path}: not a readable COCO annotation file ({e})") from None
        by_image: dict[int, list[dict]] = {}
        for a in anns:
            if not a.get("iscrowd", 0):
                by_image.setdefault(a["image_id"], []).append(a)
        for im in images:
            if im["file_name"] in scenes:
                continue
            own = by_image.get(im["id"], [])
            scenes[im["file_name"]] = Scene(int(im["height"]), int(im["width"]),
                                            np.array([a["bbox"] for a in own], dtype=np.float64).reshape(-1, 4),
                                            np.array([a["area"] for a in own], dtype=np.float64))
    return list(scenes.values())


def _fractions(values: np.ndarray, edges: Sequence[float]) -> tuple[float, ...]:
    """Fraction of ``values`` per bin, values outside the edges counted in the first / last bin."""
    idx = np.clip(np.searchsorted(np.asarray(edges), values, side="right") - 1, 0, len(edges) - 2)
    counts = np.bincount(idx, minlength=len(edges) - 1).astype(np.float64)
    return tuple(float(v) for v in counts / max(counts.sum(), 1.0))


def snap_aspect(ratio: np.ndarray, choices: Sequence[float]) -> np.ndarray:
    """Index of the nearest of ``choices`` (in log) for each image shape w / h."""
    return np.abs(np.log(np.asarray(ratio))[:, None] - np.log(np.asarray(choices))[None, :]).argmin(axis=1)


def measure(scenes: Sequence[Scene], like: SceneStats = COCO_STATS) -> SceneStats:
    """The statistics of ``scenes`` in the bins of ``like`` (images without boxes count in no object bin)."""
    ratio = np.array([s.width / s.height for s in scenes])
    counts = np.array([len(s.boxes) for s in scenes])
    aspect_idx = snap_aspect(ratio, like.image_aspects)
    image_aspect_p = np.bincount(aspect_idx, minlength=len(like.image_aspects)) / max(len(scenes), 1)
    group_of = np.clip(np.searchsorted(like.size_groups, counts, side="right") - 1, 0, len(like.size_groups) - 2)
    rel = [np.sqrt(s.boxes[:, 2] * s.boxes[:, 3] / (s.height * s.width)) for s in scenes]
    sizes = tuple(Histogram(like.sizes[g].edges, _fractions(
        np.concatenate([r for r, gi in zip(rel, group_of) if gi == g] or [np.zeros(0)]), like.sizes[g].edges))
        for g in range(len(like.sizes)))
    boxes = np.concatenate([s.boxes for s in scenes]) if scenes else np.zeros((0, 4))
    keep = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    return SceneStats(
        long_side=int(np.median([max(s.height, s.width) for s in scenes])) if scenes else 0,
        image_aspects=like.image_aspects,
        image_aspect_p=tuple(float(v) for v in image_aspect_p),
        objects=Histogram(like.objects.edges, _fractions(counts[counts > 0], like.objects.edges)),
        size_groups=like.size_groups,
        sizes=sizes,
        box_aspect=Histogram(like.box_aspect.edges, _fractions(boxes[keep, 3] / boxes[keep, 2], like.box_aspect.edges)),
        min_side=like.min_side,
    )


def tv_distance(p: Sequence[float], q: Sequence[float]) -> float:
    """Total variation distance 1/2 sum |p - q| of two histograms over the same bins (0: equal, 1: disjoint)."""
    return 0.5 * float(np.abs(np.asarray(p, dtype=np.float64) - np.asarray(q, dtype=np.float64)).sum())


def distances(a: SceneStats, b: SceneStats) -> dict[str, float]:
    """Total variation distance of every histogram of ``a`` to ``b`` (same bins)."""
    out = {"image_aspect": tv_distance(a.image_aspect_p, b.image_aspect_p),
           "objects": tv_distance(a.objects.p, b.objects.p),
           "box_aspect": tv_distance(a.box_aspect.p, b.box_aspect.p)}
    for g, (ha, hb) in enumerate(zip(a.sizes, b.sizes)):
        out[f"size[{a.size_groups[g]}-{a.size_groups[g + 1] - 1} objects]"] = tv_distance(ha.p, hb.p)
    return out


def size_split(scenes: Sequence[Scene]) -> dict[str, tuple[float, float, float]]:
    """Fractions of small / medium / large boxes by COCO's limits, of the ``area`` field and of the box area."""
    areas = np.concatenate([s.areas for s in scenes]) if scenes else np.zeros(0)
    box = np.concatenate([s.boxes[:, 2] * s.boxes[:, 3] for s in scenes]) if scenes else np.zeros(0)
    return {key: tuple(float(v) for v in np.bincount(np.searchsorted(AREA_SPLIT, a, side="right"), minlength=3)
                       / max(len(a), 1)) for key, a in (("area", areas), ("box", box))}


def _rounded(p: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in p) + ("," if len(p) == 1 else "") + ")"


def format_table(stats: SceneStats) -> str:
    """``stats`` as the Python literal of data/synthetic/scenes.py's ``COCO_STATS`` (fractions to 3 decimals)."""
    def hist(h: Histogram, indent: int) -> str:  # edges and fractions on lines of their own
        return f"Histogram({tuple(h.edges)!r},\n{' ' * (indent + 10)}{_rounded(h.p)})"

    sizes = ",\n".join(f"        {hist(h, 8)}" for h in stats.sizes)
    return (f"COCO_STATS = SceneStats(\n    long_side={stats.long_side},\n"
            f"    image_aspects={tuple(stats.image_aspects)!r},\n    image_aspect_p={_rounded(stats.image_aspect_p)},\n"
            f"    objects={hist(stats.objects, 12)},\n"
            f"    size_groups={tuple(stats.size_groups)!r},\n    sizes=(\n{sizes},\n    ),\n"
            f"    box_aspect={hist(stats.box_aspect, 15)},\n"
            f"    min_side={stats.min_side},\n)")


def report(scenes: Sequence[Scene], stats: SceneStats) -> str:
    """The numbers behind ``stats``, for a reader."""
    counts = np.array([len(s.boxes) for s in scenes])
    long = np.array([max(s.height, s.width) for s in scenes])
    boxes = np.concatenate([s.boxes for s in scenes])
    split = size_split(scenes)
    lines = [f"{len(scenes)} images, {len(boxes)} boxes; {int((counts == 0).sum())} images without boxes",
             f"long side {stats.long_side} px in {int((long == stats.long_side).sum())} images "
             f"(others {int(long.min())}-{int(long.max())})",
             f"boxes per image: mean {counts.mean():.2f}, median {np.median(counts):.0f}, max {counts.max()}",
             f"boxes with a side < {stats.min_side:g} px: "
             f"{100 * np.mean(boxes[:, 2:].min(axis=1) < stats.min_side):.1f}%"]
    for key, what in (("area", "the area field"), ("box", "the box area")):
        s, m, la = split[key]
        lines.append(f"small / medium / large by {what}: {100 * s:.1f} / {100 * m:.1f} / {100 * la:.1f}%")
    group_of = np.clip(np.searchsorted(stats.size_groups, counts, side="right") - 1, 0, len(stats.sizes) - 1)
    for g in range(len(stats.sizes)):
        lines.append(f"boxes in images of {stats.size_groups[g]}-{stats.size_groups[g + 1] - 1} objects: "
                     f"{int(counts[group_of == g].sum())}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.coco_stats", description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", type=Path, help="COCO annotation files (default: coco_tiny's train2017 and "
                                                         "val2017 and tests/assets' val2017)")
    ap.add_argument("--table", action="store_true",
                    help="print the statistics as data/synthetic/scenes.py's COCO_STATS")
    args = ap.parse_args(argv)
    files = args.files or [p for p in DEFAULT_FILES if p.is_file()]
    missing = [] if args.files else [p for p in DEFAULT_FILES if not p.is_file()]
    if missing:  # e.g. a checkout without ../shared: the table was measured with them
        print(f"note: default file(s) not found, measured without them: {', '.join(map(str, missing))}",
              file=sys.stderr)
    if not files:
        raise UserError("no annotation files given and none of the defaults exists: "
                        f"{', '.join(map(str, DEFAULT_FILES))}")
    scenes = load_scenes(files)
    if not any(len(s.boxes) for s in scenes):
        raise UserError(f"no boxes in {', '.join(map(str, files))}")
    stats = measure(scenes)
    print("files: " + ", ".join(map(str, files)))
    print(report(scenes, stats))
    if args.table:
        print(format_table(stats))
    else:
        table = ", ".join(f"{k} {v:.3f}" for k, v in distances(stats, COCO_STATS).items())
        print(f"total variation distance to data/synthetic/scenes.py's COCO_STATS: {table}")
        print("measured:\n" + format_table(stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_script(main))
