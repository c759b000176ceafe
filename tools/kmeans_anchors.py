"""K-means anchor priors (YOLOv2, Redmon & Farhadi 2017) for YOLOF's single level.

Boxes are compared by shape only: two (w, h) boxes are aligned at a common
centre and their distance is ``1 - IoU``, so large boxes do not dominate as
they would with a Euclidean distance. The clusters' centres are the means of
their members' (w, h) (YOLOv2's k-means), started from k-means++ seeds drawn
with the same distance.

    python -m tools.kmeans_anchors --config config/quickstart.yaml -k 5
    python -m tools.kmeans_anchors --config config/quickstart.yaml -k 5 --write ablations/kmeans_quickstart.yaml

The boxes are those of the training split after the deterministic (test-time)
resize of ``data.pipeline`` (``resize_shortest_edge``: ``data.test_min_size`` /
``data.test_max_size``, keeping the aspect ratio; ``yolo``: ``data.yolo.test_resize_shape``,
x and y scaled separately), computed from the annotations and the image sizes they
record (no image is decoded unless the annotation lacks its size). The printout compares the priors' mean best IoU with
that of the configured anchors. ``--write`` writes a config deriving from the
given one with ``model.anchors.custom_wh`` set to the priors (YOLOF's decoder
then predicts ``k`` anchors per cell).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import yaml

if __package__ in (None, ""):  # python tools/<name>.py: the repository root on sys.path (tools/_bootstrap.py)
    import _bootstrap  # noqa: F401

from config import load_config
from data.build import build_dataset
from data.pipelines import build_pipeline
from utils.boxes import clip_boxes
from utils.script import run_script


def shape_iou(wh: np.ndarray, anchors_wh: np.ndarray) -> np.ndarray:
    """IoU (N, K) of (N, 2) and (K, 2) (w, h) boxes aligned at a common centre."""
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    anchors_wh = np.asarray(anchors_wh, dtype=np.float64).reshape(-1, 2)
    inter = np.minimum(wh[:, None, 0], anchors_wh[None, :, 0]) * np.minimum(wh[:, None, 1], anchors_wh[None, :, 1])
    union = wh.prod(axis=1)[:, None] + anchors_wh.prod(axis=1)[None, :] - inter
    return inter / np.maximum(union, 1e-12)


def mean_best_iou(wh: np.ndarray, anchors_wh: np.ndarray) -> float:
    """Mean over boxes of the IoU with their best-fitting anchor shape."""
    if len(wh) == 0:
        return float("nan")
    return float(shape_iou(wh, anchors_wh).max(axis=1).mean())


def kmeans_anchors(wh: np.ndarray, k: int, *, seed: int = 0, iters: int = 300) -> tuple[np.ndarray, float]:
    """Cluster (N, 2) box sizes into ``k`` anchor shapes with the ``1 - IoU`` distance.

    Returns ``(sizes, mean_best_iou)``: ``sizes`` (k, 2) (w, h) sorted by area
    (ties by width), and the mean IoU of every box with its best shape.
    Deterministic for a given ``seed``. Empty clusters are re-seeded with the box
    that the current shapes fit worst.
    """
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    wh = wh[(wh > 0).all(axis=1)]
    if len(wh) < k:
        raise ValueError(f"k-means needs at least k={k} boxes with positive sides, got {len(wh)}")
    rng = np.random.default_rng(seed)
    # k-means++ seeding with the 1 - IoU distance
    centres = [wh[rng.integers(len(wh))]]
    for _ in range(1, k):
        d = 1.0 - shape_iou(wh, np.stack(centres)).max(axis=1)
        p = d ** 2
        total = p.sum()
        idx = rng.choice(len(wh), p=p / total) if total > 0 else rng.integers(len(wh))
        centres.append(wh[idx])
    centres = np.stack(centres).astype(np.float64)
    assign = None
    for _ in range(max(1, iters)):
        iou = shape_iou(wh, centres)
        new_assign = iou.argmax(axis=1)
        if assign is not None and np.array_equal(new_assign, assign):
            break
        assign = new_assign
        best = iou.max(axis=1)
        for j in range(k):  # k is small: a loop over clusters, not over boxes
            members = assign == j
            if members.any():
                centres[j] = wh[members].mean(axis=0)
            else:
                worst = int(best.argmin())
                centres[j] = wh[worst]
                best[worst] = 1.0
    order = np.lexsort((centres[:, 0], centres.prod(axis=1)))
    centres = centres[order]
    return centres, mean_best_iou(wh, centres)


def configured_anchor_wh(anchor_cfg) -> np.ndarray:
    """The (A, 2) cell anchor shapes a config's ``model.anchors`` describes."""
    if len(anchor_cfg.custom_wh) > 0:
        return np.asarray(anchor_cfg.custom_wh, dtype=np.float64)
    return np.asarray([[s / np.sqrt(r), s * np.sqrt(r)] for s in anchor_cfg.sizes for r in anchor_cfg.aspect_ratios])


def deterministic_resize(cfg):
    """The resize step of ``data.pipeline``'s test transforms (it has ``output_shape(h, w)``)."""

    return next(t for t in build_pipeline(cfg.data, is_train=False).transforms if hasattr(t, "output_shape"))


def training_box_sizes(cfg) -> np.ndarray:
    """(N, 2) (w, h) of every training box after the deterministic test-time resize (and clipping)."""

    ds = build_dataset(cfg, cfg.data.train_split, is_train=False)
    resize = deterministic_resize(cfg)
    out = []
    hw = getattr(ds, "_hw", None)
    for i in range(len(ds)):
        h, w = (int(v) for v in hw[i]) if hw is not None else (-1, -1)
        if h > 0 and w > 0 and hasattr(ds, "get_annotation"):
            boxes = np.asarray(ds.get_annotation(i)["boxes"], dtype=np.float64).reshape(-1, 4)
            newh, neww = resize.output_shape(h, w)
            boxes = clip_boxes(boxes * np.array([neww / w, newh / h, neww / w, newh / h]), newh, neww)
        else:  # the annotation does not record the image size: decode and transform the image
            boxes = ds[i][1]["boxes"].numpy().astype(np.float64)
        out.append(boxes[:, 2:] - boxes[:, :2])
    wh = np.concatenate(out) if out else np.zeros((0, 2))
    return wh[(wh > 0).all(axis=1)]


def _yaml_path(path: Path, relative_to: Path) -> str:
    return os.path.relpath(path.resolve(), relative_to.resolve())


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.kmeans_anchors", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--config", "-c", required=True, help="the config whose training split is clustered")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("-k", type=int, default=5, help="number of anchor shapes (default 5, as YOLOF's five sizes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--write", type=Path, default=None,
                   help="write a config deriving from --config with model.anchors.custom_wh set to the result")
    a = p.parse_args(argv)
    cfg = load_config(a.config, a.opts)
    wh = training_box_sizes(cfg)
    sizes, fit = kmeans_anchors(wh, a.k, seed=a.seed, iters=a.iters)
    default_wh = configured_anchor_wh(cfg.model.anchors)
    sizes = np.round(sizes, 1)
    print(f"{len(wh)} training boxes of {cfg.data.dataset} split {cfg.data.train_split!r} after the test resize "
          f"{deterministic_resize(cfg)!r}")
    print(f"k-means (k={a.k}, 1 - IoU) anchor (w, h): {sizes.tolist()}")
    print(f"  mean best IoU: k-means {mean_best_iou(wh, sizes):.4f} (before rounding {fit:.4f}), "
          f"configured anchors {mean_best_iou(wh, default_wh):.4f} ({default_wh.round(1).tolist()})")
    print(f"  as square sizes sqrt(w*h): {sorted(np.round(np.sqrt(sizes.prod(axis=1)), 1).tolist())}")
    if a.write is not None:
        a.write.parent.mkdir(parents=True, exist_ok=True)
        header = (f"# k-means anchor priors (python -m tools.kmeans_anchors --config {a.config} -k {a.k}"
                  f"{' --opts ' + ' '.join(a.opts) if a.opts else ''}): mean best IoU "
                  f"{mean_best_iou(wh, sizes):.4f} vs {mean_best_iou(wh, default_wh):.4f} for the configured anchors\n")
        body = {"_base_": _yaml_path(Path(a.config), a.write.parent),
                "model": {"anchors": {"custom_wh": [[float(w), float(h)] for w, h in sizes]}}}
        a.write.write_text(header + yaml.safe_dump(body, sort_keys=False, default_flow_style=None))
        print(f"wrote {a.write}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
