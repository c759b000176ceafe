"""The detection confusion matrix: which classes are taken for which, and what is missed or invented.

Rows are the ground-truth classes plus ``background``, columns the predicted classes plus ``background``.
Detections scoring below ``score_thresh`` are dropped; the rest are matched to the gt of their image whatever
the classes (:func:`evaluation.matching.match_image` with ``class_agnostic=True``: greedy in descending
score, IoU >= ``iou_thresh``), as mmdetection's ``confusion_matrix.py`` and ultralytics do. A matched pair
counts in (gt class, predicted class): the diagonal holds the correct detections. An unmatched gt counts in
(its class, background), an unmatched detection in (background, its class); detections inside a crowd region
count nowhere.

faster-coco-eval's ``PreviewResults.compute_confusion_matrix`` does the same matching, but it counts a
detection on a crowd region as a correct one (the crowd gt and its match enter the class pairs), so it is
not used; tests/evaluation/test_error_analysis.py checks this module against it on crowd-free data.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.matching import ImageBoxes, match_image

__all__ = ["ConfusionMatrix", "confusion_matrix", "write_confusion_json", "plot_confusion_matrix"]

BACKGROUND = "background"


@dataclass
class ConfusionMatrix:
    """``matrix`` (K+1, K+1) int64 counts; index K is background. ``category_ids`` and ``class_names`` list
    the K classes in order (gt category ids, ascending)."""

    matrix: np.ndarray
    class_names: list[str]
    category_ids: list[int]
    iou_thresh: float
    score_thresh: float

    @property
    def labels(self) -> list[str]:
        """Row / column names: the classes, then background."""
        return list(self.class_names) + [BACKGROUND]

    def without_empty_classes(self) -> "ConfusionMatrix":
        """The matrix without the classes whose row and column are both empty (no ground truth and no detection
        of theirs: an 80-class model on a set of 17 classes), background kept."""
        keep = np.flatnonzero((self.matrix[:-1].sum(axis=1) + self.matrix[:, :-1].sum(axis=0)) > 0)
        rows = np.append(keep, len(self.class_names))
        return ConfusionMatrix(self.matrix[np.ix_(rows, rows)], [self.class_names[k] for k in keep],
                               [self.category_ids[k] for k in keep], self.iou_thresh, self.score_thresh)


def confusion_matrix(gt: dict, images: list[ImageBoxes], *, iou_thresh: float = 0.5,
                     score_thresh: float = 0.3) -> ConfusionMatrix:
    """Count the confusion matrix of ``images`` (:func:`evaluation.matching.group_by_image` of ``gt``)."""
    cats = sorted(gt.get("categories", []), key=lambda c: c["id"])
    ids = [int(c["id"]) for c in cats]
    K = len(ids)
    index = {cid: k for k, cid in enumerate(ids)}
    rows, cols = [], []
    for image in images:
        image = image.keep_detections(image.det_scores >= score_thresh)
        m = match_image(image, pos_thresh=iou_thresh, class_agnostic=True)
        gt_k = np.asarray([index[int(c)] for c in image.gt_labels], np.int64)
        det_k = np.asarray([index[int(c)] for c in image.det_labels], np.int64)
        hit = m.det_tp
        rows += [gt_k[m.det_gt[hit]], np.full(int((~hit & ~m.det_ignored).sum()), K), gt_k[~m.gt_matched]]
        cols += [det_k[hit], det_k[~hit & ~m.det_ignored], np.full(int((~m.gt_matched).sum()), K)]
    matrix = np.zeros((K + 1, K + 1), np.int64)
    if rows:
        np.add.at(matrix, (np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64)), 1)
    return ConfusionMatrix(matrix, [str(c["name"]) for c in cats], ids, iou_thresh, score_thresh)


def write_confusion_json(cm: ConfusionMatrix, path: str | os.PathLike) -> None:
    payload = {"rows": "ground truth", "columns": "prediction", "labels": cm.labels,
               "category_ids": cm.category_ids, "iou_thresh": cm.iou_thresh, "score_thresh": cm.score_thresh,
               "matrix": cm.matrix.tolist()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1))


MAX_COUNTED = 30  # classes up to which each cell of the drawing prints its count (legible at 8 pt)


def plot_confusion_matrix(cm: ConfusionMatrix, out_png: str | os.PathLike, title: str = "Confusion matrix") -> Path:
    """The matrix as a heat map (colour: share of the row, so rare classes show; text: counts, up to
    :data:`MAX_COUNTED` classes) into ``out_png``; classes without ground truth and detections are left out
    (:meth:`ConfusionMatrix.without_empty_classes`; the JSON keeps every class)."""
    # object-oriented API on an Agg canvas: no pyplot, no display
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # optional
    from matplotlib.figure import Figure  # optional

    shown = cm.without_empty_classes()
    if len(shown.class_names) < len(cm.class_names):
        title = f"{title}, {len(shown.class_names)} of {len(cm.class_names)} classes"
    cm = shown
    n = len(cm.labels)
    share = cm.matrix / np.maximum(cm.matrix.sum(axis=1, keepdims=True), 1)
    side = min(max(4.0, 0.45 * n + 2.0), 30.0)
    fig = Figure(figsize=(side + 1.0, side), dpi=100)
    FigureCanvasAgg(fig)
    axis = fig.add_subplot(1, 1, 1)
    image = axis.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="share of the row (ground truth)")
    axis.set_xticks(range(n), cm.labels, rotation=90 if n > 8 else 45, ha="right" if n <= 8 else "center")
    axis.set_yticks(range(n), cm.labels)
    axis.set_xlabel("prediction")
    axis.set_ylabel("ground truth")
    axis.set_title(f"{title} (IoU >= {cm.iou_thresh:g}, score >= {cm.score_thresh:g})")
    if n <= MAX_COUNTED + 1:  # counts stay legible (+ 1: background)
        for (i, j), v in np.ndenumerate(cm.matrix):
            if v:
                axis.text(j, i, str(v), ha="center", va="center", fontsize=8,
                          color="white" if share[i, j] > 0.5 else "black")
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
