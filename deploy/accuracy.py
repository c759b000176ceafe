"""Accuracy of a :class:`deploy.predictor.Predictor` on (the first images of) a dataset split: COCO AP and AP50.

What tools/benchmark.py reports beside the speed of each backend and precision, and what the int8 test checks.
Each image file is decoded as the predictor decodes a file (``cv2.imread``, BGR) and handed to it, which runs
its own test transform and backend, so what is scored is exactly what ``Predictor.predict`` returns; the
ground truth is cut to the images predicted, so a subset is scored fairly.
"""
from __future__ import annotations

import logging
from typing import Optional

from data.build import DATASETS
from data.dataset_base import DetectionDatasetBase
from evaluation.coco_eval import evaluate_coco, restrict_to_images
from evaluation.evaluator import to_coco_results, unreadable_note

logger = logging.getLogger(__name__)


def predictor_metrics(predictor, dataset, dataset_kind: str, *, max_images: Optional[int] = None) -> dict:
    """COCO metrics (``AP``, ``AP50``, ...) of ``predictor`` on the first ``max_images`` images of ``dataset``
    (all when None), a COCO-format dataset (``coco`` or ``synthetic``) built with any transform.

    The rule of the evaluator (evaluation/evaluator.py): an image that cannot be read is not predicted and is left
    out of the ground truth; ``images_unreadable`` counts them (a warning names them)."""
    if DATASETS[dataset_kind].metric != "coco":
        raise ValueError(f"accuracy is measured with the COCO metric; dataset {dataset_kind!r} uses "
                         f"{DATASETS[dataset_kind].metric!r}")
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    predictions, unreadable = [], []
    for i in range(n):
        path = dataset.get_file_name(i)
        image, reason = DetectionDatasetBase.read_image(path)  # decoded as the predictor decodes a file
        if image is None:
            unreadable.append({"image_id": dataset.ids[i], "file_name": path, "reason": reason})
            continue
        predictions.append({"image_id": dataset.ids[i], **predictor.predict(image, input_format="BGR")})
    if unreadable:
        logger.warning("%s", unreadable_note(unreadable, n))
    gt = restrict_to_images(dataset.coco, [p["image_id"] for p in predictions])
    stats = dict(evaluate_coco(gt, to_coco_results(predictions, dataset.label_to_cat_id)).stats)
    return {**stats, "images_unreadable": len(unreadable)}
