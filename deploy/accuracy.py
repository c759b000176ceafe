"""Accuracy of a :class:`deploy.predictor.Predictor` on (the first images of) a dataset split: COCO AP and AP50.

What tools/benchmark.py reports beside the speed of each backend and precision, and what the int8 test checks.
The predictor reads each image file itself (its own test transform and backend), so what is scored is exactly
what ``Predictor.predict`` returns; the ground truth is cut to the same images, so a subset is scored fairly.
"""
from __future__ import annotations

from typing import Optional

from data.build import DATASETS
from evaluation.coco_eval import evaluate_coco
from evaluation.evaluator import to_coco_results


def predictor_metrics(predictor, dataset, dataset_kind: str, *, max_images: Optional[int] = None) -> dict:
    """COCO metrics (``AP``, ``AP50``, ...) of ``predictor`` on the first ``max_images`` images of ``dataset``
    (all when None), a COCO-format dataset (``coco`` or ``synthetic``) built with any transform."""
    if DATASETS[dataset_kind].metric != "coco":
        raise ValueError(f"accuracy is measured with the COCO metric; dataset {dataset_kind!r} uses "
                         f"{DATASETS[dataset_kind].metric!r}")
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    predictions = [{"image_id": dataset.ids[i], **predictor.predict(dataset.get_file_name(i))} for i in range(n)]
    gt = dataset.coco.dataset
    ids = set(dataset.ids[:n])
    subset = {**gt, "images": [im for im in gt["images"] if im["id"] in ids],
              "annotations": [a for a in gt["annotations"] if a["image_id"] in ids]}
    return dict(evaluate_coco(subset, to_coco_results(predictions, dataset.label_to_cat_id)).stats)
