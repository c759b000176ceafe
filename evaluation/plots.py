"""Precision-recall curve plots (matplotlib Agg canvas: no display needed).

Works with both evaluators:

* COCO: ``plot_pr_curves(res.pr_curves, "pr.png", "COCO val",
  mean_curve=res.mean_pr_curve)`` -- the curves are already COCO's 101-point
  interpolated precision, and the legend AP is their mean (= AP50 per class);
* VOC: ``plot_pr_curves(res.pr_curves, "pr.png", "VOC07 test", ap=res.ap)`` --
  the raw devkit curves; pass ``ap`` so the legend shows the devkit AP.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

__all__ = ["interpolated_precision", "curve_ap", "plot_pr_curves"]

RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def interpolated_precision(
    recall: Sequence[float], precision: Sequence[float], points: np.ndarray = RECALL_POINTS
) -> np.ndarray:
    """COCO-style interpolation: for each ``t`` in ``points`` the max precision
    at recall >= t (0 where the recall is never reached)."""
    r = np.asarray(recall, dtype=np.float64).ravel()
    p = np.asarray(precision, dtype=np.float64).ravel()
    if r.size == 0:
        return np.zeros_like(points, dtype=np.float64)
    order = np.argsort(r, kind="stable")
    r, p = r[order], p[order]
    env = np.maximum.accumulate(p[::-1])[::-1]  # max precision at index >= i
    idx = np.searchsorted(r, points, side="left")
    out = np.zeros_like(points, dtype=np.float64)
    ok = idx < r.size
    out[ok] = env[idx[ok]]
    return out


def curve_ap(recall: Sequence[float], precision: Sequence[float]) -> float:
    """101-point interpolated AP of a curve (equals COCO's AP for its curves)."""
    return float(np.mean(interpolated_precision(recall, precision)))


def _legend_aps(pr_curves: Mapping, ap: Mapping[str, float] | None) -> dict[str, float]:
    """Class name -> the AP shown in the legend: ``ap``'s where given, else the curve's 101-point AP."""
    aps = {}
    for n in pr_curves:
        v = None if ap is None else ap.get(n)
        aps[n] = curve_ap(*pr_curves[n]) if v is None else float(v)
    return aps


def _mean_of_curves(pr_curves: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """The curves' average after interpolating each at the 101 recall points (zeros without curves)."""
    if pr_curves:
        return RECALL_POINTS, np.mean([interpolated_precision(*c) for c in pr_curves.values()], axis=0)
    return RECALL_POINTS, np.zeros_like(RECALL_POINTS)


def _shown_classes(aps: dict[str, float], max_classes: int, n_extreme: int) -> tuple[list[str], str]:
    """(the classes drawn, a title note): all of them, or the ``n_extreme`` best and worst past ``max_classes``."""
    names = list(aps)
    if len(names) <= max_classes:
        return names, ""
    ranked = sorted(names, key=lambda n: (-aps[n] if not math.isnan(aps[n]) else math.inf))
    shown = ranked[:n_extreme] + [n for n in ranked[-n_extreme:] if n not in ranked[:n_extreme]]
    return shown, f" ({n_extreme} best / worst of {len(names)} classes)"


def _label_axes(axis, title: str, num_shown: int) -> None:
    axis.set_xlabel("Recall")
    axis.set_ylabel("Precision")
    axis.set_xlim(-0.01, 1.01)  # margins so curves on 0 / 1 stay visible
    axis.set_ylim(-0.02, 1.02)
    axis.grid(True, alpha=0.3)
    axis.set_title(title)
    axis.legend(loc="lower left", fontsize=8 if num_shown <= 10 else 6, ncol=1 if num_shown <= 12 else 2)


def plot_pr_curves(
    pr_curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    out_png: str | os.PathLike,
    title: str = "Precision-recall",
    *,
    ap: Mapping[str, float] | None = None,
    mean_curve: tuple[Sequence[float], Sequence[float]] | None = None,
    max_classes: int = 20,
    n_extreme: int = 3,
) -> Path:
    """Plot per-class PR curves (thin) and their mean (bold) into ``out_png``.

    Args:
        pr_curves: class name -> (recall, precision).
        out_png: output image path (parent folders are created).
        title: figure title.
        ap: optional class name -> AP for the legend; defaults to the
            101-point interpolated AP of each curve (:func:`curve_ap`).
        mean_curve: optional (recall, precision) drawn bold; defaults to the
            average of the curves interpolated at 101 recall points.
        max_classes: with more classes than this, only the ``n_extreme``
            best and worst classes (by AP) are drawn next to the mean.

    Returns the output path.
    """
    # object-oriented API on an Agg canvas: no pyplot, no global backend
    # switch, never a display
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy
    from matplotlib.figure import Figure  # heavy

    aps = _legend_aps(pr_curves, ap)
    mean_curve = _mean_of_curves(pr_curves) if mean_curve is None else mean_curve
    valid = [v for v in aps.values() if not math.isnan(v)]
    mean_ap = float(np.mean(valid)) if valid else float("nan")
    shown, subset_note = _shown_classes(aps, max_classes, n_extreme)

    fig = Figure(figsize=(7, 6), dpi=100)
    FigureCanvasAgg(fig)
    axis = fig.add_subplot(1, 1, 1)
    for n in shown:
        r, p = pr_curves[n]
        axis.plot(np.asarray(r), np.asarray(p), linewidth=1.0, alpha=0.8, label=f"{n} AP={aps[n]:.3f}")
    axis.plot(np.asarray(mean_curve[0]), np.asarray(mean_curve[1]), color="black", linewidth=3.0,
              label=f"mean of {len(aps)} classes AP={mean_ap:.3f}")
    _label_axes(axis, title + subset_note, len(shown))
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
