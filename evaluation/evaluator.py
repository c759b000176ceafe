"""Run a detector over a dataset split and score it: the evaluator shared by train.py and eval.py.

Inference and scoring are separate: :func:`predict` returns detections in
original-image pixels; :func:`score` turns them into metrics with the dataset's metric
(``data.build.DATASETS[name].metric``, a key of :data:`METRICS`), and each metric also scores a
results file (eval.py --results): one report path (table, metrics.json, PR curve, error analysis)
per metric, :func:`report_coco` / :func:`report_voc`, over the pure metric code of
:mod:`evaluation.coco_eval` and :mod:`evaluation.voc_eval` (pycocotools / the VOC devkit's rules).
This module imports neither models nor data: it scores whatever detections it is given.

Every image is scored once. An image the loader cannot read (``target["unreadable"]``, from
``data.build.EvaluationSamples``) is not predicted: its prediction entry holds no boxes and the reason under
:data:`UNREADABLE`, and the metrics leave it out of the ground truth as well (so exact detections of the other
images score AP 100, and a damaged file is a data problem named in the summary, not misses of the model). The
summary says how many images were unreadable; ``metrics.json`` lists them; the flat metrics count them
(``images_unreadable``, only when there are any).
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

from evaluation import coco_eval, voc_eval
from evaluation.error_analysis import analyze_errors
from evaluation.plots import plot_pr_curves
from utils.distributed import all_gather_object, is_main_process
from utils.errors import UserError
from utils.precision import amp_context

logger = logging.getLogger(__name__)


UNREADABLE = "unreadable"  # the key of a prediction entry (and a loader target) whose image could not be read


def _not_predicted(target: dict) -> dict:
    """The prediction entry of an image that could not be read: no boxes, and why."""
    return {"image_id": target["image_id"], "boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32),
            "labels": np.zeros(0, np.int64), "file_name": target.get("file_name"), UNREADABLE: target[UNREADABLE]}


def unreadable_images(predictions: list[dict]) -> list[dict]:
    """``{"image_id", "file_name", "reason"}`` of every image the predictions say could not be read."""
    return [{"image_id": p["image_id"], "file_name": p.get("file_name"), "reason": p[UNREADABLE]}
            for p in predictions if UNREADABLE in p]


@torch.no_grad()
def predict(model, loader, device: torch.device, *, amp: str = "none", progress: bool = True) -> list[dict]:
    """Detections per image: dicts with ``image_id``, ``boxes`` (N, 4) xyxy in original pixels,
    ``scores``, ``labels`` (numpy), gathered from all ranks (rank 0 gets the full list). An image the loader
    could not read is not predicted: its entry has no boxes and the reason under :data:`UNREADABLE`."""
    was_training = model.training
    model.eval()
    results, skipped = [], []
    start = time.perf_counter()
    for images, targets in tqdm(loader, desc="eval", disable=not (progress and is_main_process()), leave=False):
        read = [k for k, t in enumerate(targets) if UNREADABLE not in t]
        skipped += [_not_predicted(t) for t in targets if UNREADABLE in t]
        if not read:
            continue
        images = [images[k].to(device, non_blocking=True) for k in read]
        targets = [targets[k] for k in read]
        out_sizes = [tuple(int(v) for v in t["orig_size"]) for t in targets]
        with amp_context(device, amp):
            outputs = model(images, output_sizes=out_sizes)
        for t, o in zip(targets, outputs):
            results.append({"image_id": t["image_id"], "boxes": o["boxes"].float().cpu().numpy(),
                            "scores": o["scores"].float().cpu().numpy(), "labels": o["labels"].cpu().numpy()})
    model.train(was_training)
    logger.info("inference on %d images took %.1f s%s", len(results), time.perf_counter() - start,
                f" ({len(skipped)} more could not be read: not predicted)" if skipped else "")
    gathered = all_gather_object(results + skipped)
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


@dataclass(frozen=True)
class ScoreOptions:
    """What a scorer may be asked for besides the metrics: where to write them, the detections, the metric's own
    switches (each metric reads the ones it has), and how the summary is shown."""

    metrics_path: Optional[Path] = None  # metrics JSON (+ PR curve PNG next to it)
    pr_curve: bool = True  # draw the PR curve PNG next to metrics_path (a training run draws it at its last evaluation)
    save_results: Optional[Path] = None  # COCO: detections JSON; VOC: a folder of devkit comp4 files
    backend: str = "pycocotools"  # COCO: evaluation.coco_eval.BACKENDS
    use_07_metric: bool = True  # VOC: 11-point (VOC07) or area (VOC2010+) AP
    analyze: bool = False  # COCO: the error analysis (evaluation/error_analysis.py) beside metrics_path
    echo: Callable[[str], None] = logger.info  # where the summary table goes (eval.py: print)


# ----------------------------------------------------------------------------- unreadable images
def unreadable_note(unreadable: list[dict], total: int) -> str:
    """The summary line of the images that could not be read (:func:`unreadable_images`) of ``total``."""
    shown = "; ".join(f"{u['file_name']} ({u['reason']})" for u in unreadable[:3])
    more = f"; ... ({len(unreadable)} in all)" if len(unreadable) > 3 else ""
    return (f"{len(unreadable)} of {total} images could not be read: not predicted, and left out of the ground "
            f"truth (docs/evaluation.md, unreadable images): {shown}{more}")


def _with_unreadable(write_json: Callable[[Path], None], unreadable: list[dict]) -> Callable[[Path], None]:
    """``write_json``, then the unreadable images listed in the file it wrote (``unreadable_images``)."""
    def write(path: Path) -> None:
        write_json(path)
        if unreadable:
            payload = json.loads(Path(path).read_text())
            payload["unreadable_images"] = unreadable
            Path(path).write_text(json.dumps(payload, indent=2))
    return write


# ----------------------------------------------------------------------------- COCO
def report_coco(gt, dets: list[dict], options: ScoreOptions, *, image_dir: Optional[Path] = None,
                unreadable: tuple = ()):
    """(metrics, result) of validated COCO results ``dets`` against ``gt`` (a COCO object, a COCO dict or an
    annotation file): the summary table, ``metrics.json`` + PR curve and, with ``options.analyze``, the error
    analysis. ``unreadable``: the images left out of ``gt`` (:func:`unreadable_images`), said in the summary."""
    result = coco_eval.evaluate_coco(gt, dets, backend=options.backend)
    unreadable = list(unreadable)
    if unreadable:
        options.echo(unreadable_note(unreadable, result.num_images + len(unreadable)))
    options.echo(coco_eval.summary_table(result))
    if options.metrics_path is not None:
        write_reports(options.metrics_path, pr_curves=result.pr_curves if options.pr_curve else None, title="COCO",
                      write_json=_with_unreadable(lambda p: coco_eval.write_metrics_json(result, p), unreadable))
    if options.analyze:
        gt_dict = coco_eval.gt_dataset(gt)
        out_dir = Path(options.metrics_path or "metrics.json").parent
        if image_dir is not None and not Path(image_dir).is_dir():
            options.echo(f"worst / best images not drawn: image folder {image_dir} not found (they are listed in "
                         f"{out_dir / 'error_analysis.json'})")
            image_dir = None
        options.echo(analyze_errors(gt_dict, dets, out_dir, image_dir=image_dir)[1])
    return _flat(result.stats, unreadable), result


def _flat(stats: dict, unreadable: list) -> dict:
    return {**stats, "images_unreadable": len(unreadable)} if unreadable else dict(stats)


def score_coco(dataset, predictions: list[dict], options: Optional[ScoreOptions] = None, **kwargs):
    """COCO metrics of a model's ``predictions`` against ``dataset.coco`` (and the detections JSON at
    ``options.save_results``); ``kwargs``: :class:`ScoreOptions` fields, instead of ``options``. Images the
    predictions say could not be read are left out of the ground truth."""
    options = options or ScoreOptions(**kwargs)
    dets = to_coco_results(predictions, dataset.label_to_cat_id)
    if options.save_results is not None:
        Path(options.save_results).parent.mkdir(parents=True, exist_ok=True)
        Path(options.save_results).write_text(json.dumps(dets))
    image_dir = getattr(dataset, "image_dir", None)  # file_name entries may also be absolute paths
    unreadable = unreadable_images(predictions)
    gt = dataset.coco
    if unreadable:
        left_out = {u["image_id"] for u in unreadable}
        gt = coco_eval.restrict_to_images(gt, [i for i in gt.getImgIds() if i not in left_out])
    return report_coco(gt, dets, options, image_dir=Path(image_dir) if image_dir else None, unreadable=unreadable)


def score_coco_file(ground_truth, results: Path, options: ScoreOptions, *, image_dir: Optional[Path] = None):
    """COCO metrics of a results JSON file against ``ground_truth`` (a COCO object or an annotation file); every
    problem of the file (ids, categories, boxes, scores) is named, with the file, in one line."""
    try:
        dets = coco_eval.load_detections(results)
        coco_eval.validate_detections(dets, ground_truth, source=str(results))
    except ValueError as e:
        raise UserError(str(e)) from None
    return report_coco(ground_truth, dets, options, image_dir=image_dir)


# ----------------------------------------------------------------------------- VOC
def voc_annotations(dataset) -> dict:
    """Ground truth of a VOCDetection in the devkit's 1-based pixel convention."""
    ann = {}
    for i in range(len(dataset)):
        a = dataset.get_annotation(i)
        ann[dataset._image_id(i)] = {"boxes": voc_eval.to_devkit_coords(a["boxes"]), "labels": a["labels"].tolist(),
                                     "difficult": a.get("difficult", np.zeros(len(a["labels"]), bool))}
    return ann


def voc_detections(predictions: list[dict], class_names) -> dict:
    dets = {c: [] for c in class_names}
    for p in predictions:
        boxes = voc_eval.to_devkit_coords(p["boxes"])
        for b, s, l in zip(boxes.tolist(), p["scores"].tolist(), p["labels"].tolist()):
            dets[class_names[l]].append((p["image_id"], float(s), *b))
    return dets


def voc_split_name(dataset) -> str:
    """The split name of a VOCDetection's comp4 files: ``test`` for ``(("2007", "test"),)``."""
    return "+".join(name for _, name in dataset.image_sets)


def report_voc(dets: dict, dataset, options: ScoreOptions, *, unreadable: tuple = ()):
    """(metrics, result) of per-class devkit detections against a VOCDetection: the table, metrics.json + PR curve.
    ``unreadable``: images left out of the ground truth (:func:`unreadable_images`), said in the summary."""
    annotations = voc_annotations(dataset)
    unreadable = list(unreadable)
    for u in unreadable:
        annotations.pop(u["image_id"], None)
    if unreadable:
        options.echo(unreadable_note(unreadable, len(annotations) + len(unreadable)))
    result = voc_eval.evaluate_voc(dets, annotations, dataset.class_names, use_07_metric=options.use_07_metric)
    options.echo(voc_eval.summary_table(result))
    metrics = _flat({"mAP": float(result.mAP), "AP50": float(result.mAP)}, unreadable)
    metrics.update({f"AP_{k}": float(v) for k, v in result.ap.items()})
    if options.metrics_path is not None:
        write_reports(options.metrics_path, pr_curves=result.pr_curves if options.pr_curve else None, title="VOC",
                      write_json=_with_unreadable(lambda p: voc_eval.write_metrics_json(result, p), unreadable))
    return metrics, result


def score_voc(dataset, predictions: list[dict], options: Optional[ScoreOptions] = None, *,
              split: Optional[str] = None, results_dir: Optional[Path] = None, **kwargs):
    """VOC devkit metrics of a model's ``predictions`` (and comp4 files in ``options.save_results``, or
    ``results_dir``); ``kwargs``: :class:`ScoreOptions` fields, instead of ``options``. ``split``: the comp4 files'
    split name (default: the dataset's, :func:`voc_split_name`)."""
    options = options or ScoreOptions(save_results=results_dir, **kwargs)
    if split is not None and split != voc_split_name(dataset):
        raise ValueError(f"split {split!r} is not the dataset's ({voc_split_name(dataset)!r})")
    dets = voc_detections(predictions, dataset.class_names)
    if options.save_results is not None:
        voc_eval.write_voc_results(options.save_results, voc_split_name(dataset), dets)
    return report_voc(dets, dataset, options, unreadable=unreadable_images(predictions))


def score_voc_file(dataset, results: Path, options: ScoreOptions, *, image_dir: Optional[Path] = None):
    """VOC devkit metrics of a folder of comp4 files; a malformed line is named with its file and line number."""
    try:
        dets = voc_eval.read_voc_results(results, voc_split_name(dataset), dataset.class_names)
    except ValueError as e:
        raise UserError(str(e)) from None
    return report_voc(dets, dataset, options)


# ----------------------------------------------------------------------------- one path for every metric
def write_reports(metrics_path: Path, *, pr_curves: Optional[dict], title: str, write_json) -> None:
    """``metrics_path`` (JSON, written by ``write_json(path)``) and, next to it, ``<stem>_pr_curve.png`` (none
    when ``pr_curves`` is None)."""
    metrics_path = Path(metrics_path)
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    write_json(metrics_path)
    if pr_curves is None:
        return
    try:
        plot_pr_curves(pr_curves, metrics_path.with_name(metrics_path.stem + "_pr_curve.png"),
                       f"{title} precision-recall (IoU 0.5)")
    except Exception as e:  # a plot must never lose the metrics
        logger.warning("could not draw the PR curve: %s", e)


@dataclass(frozen=True)
class Metric:
    """One metric: how it scores a model's predictions on a dataset, and a results file against its ground truth
    (``data.build.DATASETS[name].ground_truth`` gives it: a COCO object / annotation file, or a VOCDetection)."""

    score: Callable  # (dataset, predictions, options) -> (flat metrics, result)
    score_file: Callable  # (ground_truth, results path, options, *, image_dir) -> (flat metrics, result)
    analyzable: bool  # ScoreOptions.analyze works (COCO-format ground truth)


# every metric name (data.build.DATASETS[...].metric): the trainer, eval.py and the deploy checks go through it
METRICS: dict[str, Metric] = {
    "coco": Metric(score_coco, score_coco_file, analyzable=True),
    "voc": Metric(score_voc, score_voc_file, analyzable=False),
}


def score(dataset, predictions: list[dict], *, metric: str, options: ScoreOptions = ScoreOptions()):
    """(flat metrics dict, full result) of ``predictions`` with :data:`METRICS` ``[metric]``."""
    return METRICS[metric].score(dataset, predictions, options)


def evaluate(model, dataset, loader, device, metric: str, amp: str = "none",
             metrics_path: Optional[Path] = None, pr_curve: bool = True, progress: bool = True) -> dict:
    """Predict on ``loader`` and score against ``dataset``; returns a flat metrics dict (rank 0; {} elsewhere).
    ``progress``: the evaluation's bar (train.py --no_progress turns it off with the training's)."""
    predictions = predict(model, loader, device, amp=amp, progress=progress)
    if not is_main_process():
        return {}
    return score(dataset, predictions, metric=metric,
                 options=ScoreOptions(metrics_path=metrics_path, pr_curve=pr_curve))[0]
