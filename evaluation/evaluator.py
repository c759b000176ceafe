"""Run a detector over a dataset split and score it: the evaluator shared by train.py and eval.py.

Inference and scoring are separate: :func:`predict` returns detections in
original-image pixels; :func:`score` turns them into metrics with the dataset's metric
(``data.build.DATASETS[name].metric``, a key of :data:`METRICS`): :func:`score_coco` /
:func:`score_voc`, over the pure metric code of :mod:`evaluation.coco_eval` and
:mod:`evaluation.voc_eval` (pycocotools / the VOC devkit's rules).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from tqdm import tqdm

from engine.distributed import all_gather_object, is_main_process
from utils.precision import amp_context

logger = logging.getLogger(__name__)


@torch.no_grad()
def predict(model, loader, device: torch.device, *, amp: str = "none", progress: bool = True) -> list[dict]:
    """Detections per image: dicts with ``image_id``, ``boxes`` (N, 4) xyxy in original pixels,
    ``scores``, ``labels`` (numpy), gathered from all ranks (rank 0 gets the full list)."""
    was_training = model.training
    model.eval()
    results = []
    start = time.perf_counter()
    for images, targets in tqdm(loader, desc="eval", disable=not (progress and is_main_process()), leave=False):
        images = [im.to(device, non_blocking=True) for im in images]
        out_sizes = [tuple(int(v) for v in t["orig_size"]) for t in targets]
        with amp_context(device, amp):
            outputs = model(images, output_sizes=out_sizes)
        for t, o in zip(targets, outputs):
            results.append({"image_id": t["image_id"], "boxes": o["boxes"].float().cpu().numpy(),
                            "scores": o["scores"].float().cpu().numpy(), "labels": o["labels"].cpu().numpy()})
    model.train(was_training)
    logger.info("inference on %d images took %.1f s", len(results), time.perf_counter() - start)
    gathered = all_gather_object(results)
    return [r for part in gathered for r in part]


def to_coco_results(predictions: list[dict], label_to_cat_id) -> list[dict]:
    """COCO results json entries (bbox [x, y, w, h] unrounded, original category ids)."""
    out = []
    for p in predictions:
        b = p["boxes"]
        for (x1, y1, x2, y2), s, l in zip(b.tolist(), p["scores"].tolist(), p["labels"].tolist()):
            out.append({"image_id": int(p["image_id"]), "category_id": int(label_to_cat_id[l]),
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(s)})  # unrounded, as official
    return out


def score_coco(dataset, predictions: list[dict], *, backend: str = "pycocotools",
               metrics_path: Optional[Path] = None, save_results: Optional[Path] = None) -> tuple[dict, object]:
    """COCO metrics of ``predictions`` against ``dataset.coco`` (and the detections JSON at ``save_results``)."""
    from evaluation.coco_eval import evaluate_coco, summary_table, write_metrics_json

    dets = to_coco_results(predictions, dataset.label_to_cat_id)
    if save_results is not None:
        Path(save_results).parent.mkdir(parents=True, exist_ok=True)
        Path(save_results).write_text(json.dumps(dets))
    result = evaluate_coco(dataset.coco, dets, backend=backend)
    logger.info("\n%s", summary_table(result))
    if metrics_path is not None:
        write_reports(metrics_path, pr_curves=result.pr_curves, title="COCO",
                      write_json=lambda p: write_metrics_json(result, p))
    return dict(result.stats), result


def voc_annotations(dataset) -> dict:
    """Ground truth of a VOCDetection in the devkit's 1-based pixel convention."""
    from evaluation.voc_eval import to_devkit_coords

    ann = {}
    for i in range(len(dataset)):
        a = dataset.get_annotation(i)
        ann[dataset._image_id(i)] = {"boxes": to_devkit_coords(a["boxes"]), "labels": a["labels"].tolist(),
                                     "difficult": a.get("difficult", np.zeros(len(a["labels"]), bool))}
    return ann


def voc_detections(predictions: list[dict], class_names) -> dict:
    from evaluation.voc_eval import to_devkit_coords

    dets = {c: [] for c in class_names}
    for p in predictions:
        boxes = to_devkit_coords(p["boxes"])
        for b, s, l in zip(boxes.tolist(), p["scores"].tolist(), p["labels"].tolist()):
            dets[class_names[l]].append((p["image_id"], float(s), *b))
    return dets


def score_voc(dataset, predictions: list[dict], *, use_07_metric: bool = True, metrics_path: Optional[Path] = None,
              split: str = "test", results_dir: Optional[Path] = None) -> tuple[dict, object]:
    """VOC devkit metrics of ``predictions`` against a VOCDetection (and comp4 files for ``split`` in ``results_dir``)."""
    from evaluation.voc_eval import evaluate_voc, summary_table, write_metrics_json, write_voc_results

    dets = voc_detections(predictions, dataset.class_names)
    if results_dir is not None:
        write_voc_results(results_dir, split, dets)
    result = evaluate_voc(dets, voc_annotations(dataset), dataset.class_names, use_07_metric=use_07_metric)
    logger.info("\n%s", summary_table(result))
    metrics = {"mAP": float(result.mAP), "AP50": float(result.mAP)}
    metrics.update({f"AP_{k}": float(v) for k, v in result.ap.items()})
    if metrics_path is not None:
        write_reports(metrics_path, pr_curves=result.pr_curves, title="VOC",
                      write_json=lambda p: write_metrics_json(result, p))
    return metrics, result


def write_reports(metrics_path: Path, *, pr_curves: dict, title: str, write_json) -> None:
    """``metrics_path`` (JSON, written by ``write_json(path)``) and, next to it, ``<stem>_pr_curve.png``."""
    from evaluation.plots import plot_pr_curves

    metrics_path = Path(metrics_path)
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    write_json(metrics_path)
    try:
        plot_pr_curves(pr_curves, metrics_path.with_name(metrics_path.stem + "_pr_curve.png"),
                       f"{title} precision-recall (IoU 0.5)")
    except Exception as e:  # a plot must never lose the metrics
        logger.warning("could not draw the PR curve: %s", e)


@dataclass(frozen=True)
class ScoreOptions:
    """What a scorer may be asked for besides the metrics: where to write them, the detections, and the
    metric's own switches (each metric reads the ones it has)."""

    metrics_path: Optional[Path] = None  # metrics JSON (+ PR curve PNG next to it)
    save_results: Optional[Path] = None  # COCO: detections JSON; VOC: a folder of devkit comp4 files
    backend: str = "pycocotools"  # COCO: evaluation.coco_eval.BACKENDS
    use_07_metric: bool = True  # VOC: 11-point (VOC07) or area (VOC2010+) AP


def voc_split_name(dataset) -> str:
    """The split name of a VOCDetection's comp4 files: ``test`` for ``(("2007", "test"),)``."""
    return "+".join(name for _, name in dataset.image_sets)


# metric name (data.build.DATASETS[name].metric) -> scorer(dataset, predictions, options) -> (metrics, result)
METRICS: dict[str, Callable] = {
    "coco": lambda ds, preds, o: score_coco(ds, preds, backend=o.backend, metrics_path=o.metrics_path,
                                            save_results=o.save_results),
    "voc": lambda ds, preds, o: score_voc(ds, preds, use_07_metric=o.use_07_metric, metrics_path=o.metrics_path,
                                          split=voc_split_name(ds), results_dir=o.save_results),
}


def score(dataset, predictions: list[dict], *, dataset_kind: str, options: ScoreOptions = ScoreOptions()):
    """(flat metrics dict, full result) of ``predictions`` with the metric of ``data.build.DATASETS[dataset_kind]``."""
    from data.build import DATASETS

    return METRICS[DATASETS[dataset_kind].metric](dataset, predictions, options)


def evaluate(model, dataset, loader, device, dataset_kind: str, amp: str = "none",
             metrics_path: Optional[Path] = None) -> dict:
    """Predict on ``loader`` and score against ``dataset``; returns a flat metrics dict (rank 0; {} elsewhere)."""
    predictions = predict(model, loader, device, amp=amp)
    if not is_main_process():
        return {}
    return score(dataset, predictions, dataset_kind=dataset_kind, options=ScoreOptions(metrics_path=metrics_path))[0]
