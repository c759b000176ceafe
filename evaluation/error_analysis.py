"""Why a detector fails: the TIDE breakdown, the confusion matrix and the worst and best images, written together.

:func:`analyze_errors` takes a COCO ground-truth dict and COCO results (what ``eval.py --save_results``
writes) and writes into one folder:

* ``tide.json`` -- the dAP of each error type (keys ``Cls Loc Both Dupe Bkg Miss FalsePos FalseNeg``,
  :mod:`evaluation.tide`);
* ``confusion_matrix.json`` / ``.png`` -- :mod:`evaluation.confusion`;
* ``error_analysis.json`` -- all of it in one file: AP50, dAP, error counts, thresholds, and the worst and
  best images by their own AP50 (over the classes with a gt in the image), ties broken by their errors at
  the score threshold (false positives + missed gt: what the drawings show); an image without gt has AP50
  100 when nothing scores above the threshold in it, else 0;
* ``worst_images/`` and ``best_images/`` -- those images with their ground truth and detections drawn (when an
  image folder is given): true positives green, false positives red with their TIDE error type, missed gt
  orange, every gt box thin white beneath.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from evaluation.confusion import confusion_matrix, plot_confusion_matrix, write_confusion_json
from evaluation.matching import ImageBoxes, group_by_image, match_image
from evaluation.tide import ERROR_TYPES, SPECIAL_ERROR_TYPES, TideResult, classify_errors, format_table, tide_errors
from utils.visualize import draw_boxes, draw_legend, draw_tagged_boxes

__all__ = ["AnalysisOptions", "analyze_errors", "image_errors", "image_scores", "rank_images", "draw_image_errors"]

logger = logging.getLogger(__name__)

TP_COLOR, FP_COLOR, MISSED_COLOR, GT_COLOR, IGNORED_COLOR = (0, 200, 0), (0, 0, 255), (0, 165, 255), \
    (255, 255, 255), (160, 160, 160)


@dataclass(frozen=True)
class AnalysisOptions:
    """The knobs of :func:`analyze_errors`."""

    pos_thresh: float = 0.5  # IoU of a hit (TIDE, confusion matrix)
    bg_thresh: float = 0.1  # TIDE: IoU at or below which a false positive is background
    score_thresh: float = 0.3  # confusion matrix and drawings: detections scoring below are left out
    num_images: int = 8  # worst and best images drawn (each)
    max_dets: int = 100  # detections per image kept (the best), as COCO's and tidecv's maxDets


def image_errors(images: list[ImageBoxes], options: AnalysisOptions = AnalysisOptions()) -> dict[int, int]:
    """Image id -> false positives + missed gt among the detections scoring >= ``options.score_thresh``."""
    out = {}
    for image in images:
        m = match_image(image.keep_detections(image.det_scores >= options.score_thresh), pos_thresh=options.pos_thresh)
        out[image.image_id] = int((~m.det_tp & ~m.det_ignored).sum() + (~m.gt_matched).sum())
    return out


def image_scores(image_ap50: dict[int, float], errors: dict[int, int]) -> dict[int, float]:
    """Image id (of ``errors``) -> its AP50 (``TideResult.image_ap50``); an image without gt, missing there,
    has 100 without errors, else 0."""
    return {i: image_ap50.get(i, 0.0 if errors[i] else 100.0) for i in errors}


def rank_images(ap: dict[int, float], errors: dict[int, int], num: int) -> tuple[list[int], list[int]]:
    """(worst, best) ``num`` image ids by AP50 (:func:`image_scores`), ties broken by the errors."""
    worst = sorted(ap, key=lambda i: (ap[i], -errors[i], i))
    best = sorted(ap, key=lambda i: (-ap[i], errors[i], i))
    return worst[:num], best[:num]


def _xyxy(xywh: np.ndarray) -> np.ndarray:
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1) if len(xywh) else np.zeros((0, 4))


def draw_image_errors(image_bgr: np.ndarray, image: ImageBoxes, names: dict[int, str], *,
                      options: AnalysisOptions = AnalysisOptions()) -> np.ndarray:
    """``image``'s gt and its detections scoring >= ``options.score_thresh``, matched anew among themselves:
    true positives green, false positives red (tagged with their TIDE type), missed gt orange."""
    shown = image.keep_detections(image.det_scores >= options.score_thresh)
    m = match_image(shown, pos_thresh=options.pos_thresh)
    error, _ = classify_errors(shown, m.det_gt, pos_thresh=options.pos_thresh, bg_thresh=options.bg_thresh,
                               iou=m.iou)
    tags = [f"{names.get(int(c), c)} {s:.2f}" for c, s in zip(shown.det_labels, shown.det_scores)]
    fp = ~m.det_tp & ~m.det_ignored
    missed = ~m.gt_matched
    img = draw_boxes(image_bgr, _xyxy(np.concatenate([shown.gt_boxes, shown.crowd_boxes])), GT_COLOR, 1)
    img = draw_tagged_boxes(img, _xyxy(shown.gt_boxes[missed]),
                            [f"{names.get(int(c), c)} missed" for c in shown.gt_labels[missed]], MISSED_COLOR)
    img = draw_tagged_boxes(img, _xyxy(shown.det_boxes[m.det_ignored]), None, IGNORED_COLOR, 1)
    img = draw_tagged_boxes(img, _xyxy(shown.det_boxes[fp]),
                            [f"{t} {ERROR_TYPES[e]}" for t, e, f in zip(tags, error, fp) if f], FP_COLOR)
    img = draw_tagged_boxes(img, _xyxy(shown.det_boxes[m.det_tp]),
                            [t for t, hit in zip(tags, m.det_tp) if hit], TP_COLOR)
    return draw_legend(img, [(f"true positive ({int(m.det_tp.sum())})", TP_COLOR),
                             (f"false positive ({int(fp.sum())})", FP_COLOR),
                             (f"missed ({int(missed.sum())})", MISSED_COLOR)])


def _draw_ranked(images: dict[int, ImageBoxes], ids: list[int], ap: dict[int, float], names: dict[int, str],
                 image_dir: Path, out_dir: Path, options: AnalysisOptions) -> list[str]:
    """Draw the images ``ids`` into ``out_dir`` (rank, AP50 and name in the file name); returns the files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for rank, i in enumerate(ids, 1):
        im = images[i]
        path = image_dir / im.file_name
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            logger.warning("could not read %s: image %d not drawn", path, i)
            continue
        out = out_dir / f"{rank:02d}_ap{ap[i]:.0f}_{Path(im.file_name).stem}.jpg"
        cv2.imwrite(str(out), draw_image_errors(bgr, im, names, options=options))
        written.append(str(out))
    return written


def _summary(tide: TideResult, ranked: dict[str, list[int]], ap: dict[int, float], errors: dict[int, int],
             images: dict[int, ImageBoxes], options: AnalysisOptions) -> dict:
    def entry(i):
        return {"image_id": i, "file_name": images[i].file_name, "AP50": ap[i], "errors": errors[i]}

    return {"AP50": tide.ap50, "dAP": {k: tide.dap[k] for k in ERROR_TYPES + SPECIAL_ERROR_TYPES},
            "counts": tide.counts, "pos_thresh": options.pos_thresh, "bg_thresh": options.bg_thresh,
            "score_thresh": options.score_thresh, "max_dets": options.max_dets,
            **{f"{key}_images": [entry(i) for i in ids] for key, ids in ranked.items()}}


def analyze_errors(gt: dict, dets: list[dict], out_dir: str | Path, *, image_dir: Optional[str | Path] = None,
                   options: AnalysisOptions = AnalysisOptions()) -> tuple[TideResult, str]:
    """Write the TIDE breakdown, the confusion matrix and the worst / best images into ``out_dir``.

    ``gt``: a COCO instances dict; ``dets``: validated COCO results on its images
    (:func:`evaluation.coco_eval.validate_detections`). Images are drawn only with ``image_dir`` (the folder
    that the gt's ``file_name`` entries are relative to). Returns the TIDE result and the text report.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = group_by_image(gt, dets, max_dets=options.max_dets)
    tide = tide_errors(images, pos_thresh=options.pos_thresh, bg_thresh=options.bg_thresh)
    (out_dir / "tide.json").write_text(json.dumps({k: tide.dap[k] for k in ERROR_TYPES + SPECIAL_ERROR_TYPES},
                                                  indent=1))
    cm = confusion_matrix(gt, images, iou_thresh=options.pos_thresh, score_thresh=options.score_thresh)
    write_confusion_json(cm, out_dir / "confusion_matrix.json")
    try:
        plot_confusion_matrix(cm, out_dir / "confusion_matrix.png")
    except Exception as e:  # a plot must never lose the numbers
        logger.warning("could not draw the confusion matrix: %s", e)
    errors = image_errors(images, options)
    ap = image_scores(tide.image_ap50, errors)
    ranked = dict(zip(("worst", "best"), rank_images(ap, errors, options.num_images)))
    by_id = {im.image_id: im for im in images}
    summary = _summary(tide, ranked, ap, errors, by_id, options)
    if image_dir is not None:
        names = {cid: name for cid, name in zip(cm.category_ids, cm.class_names)}
        for key, ids in ranked.items():
            summary[f"{key}_image_files"] = _draw_ranked(by_id, ids, ap, names, Path(image_dir),
                                                         out_dir / f"{key}_images", options)
    (out_dir / "error_analysis.json").write_text(json.dumps(summary, indent=1))
    report = "\n".join([format_table(tide), "", f"written to {out_dir}: tide.json, confusion_matrix.json/.png, "
                        "error_analysis.json" + (", worst_images/, best_images/" if image_dir is not None else "")])
    return tide, report
