"""deploy/accuracy.py (tools/benchmark.py's AP columns): the evaluator's rule for an image that cannot be read: not
predicted, left out of the ground truth, counted."""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from data.coco import COCODetection
from data.transforms import Compose
from deploy.accuracy import predictor_metrics
from tests.conftest import COCO_SPLIT


def test_an_unreadable_image_is_left_out_of_the_benchmark_ground_truth(coco_tiny, tmp_path):
    """tests/assets with one image replaced by junk bytes; a predictor that answers each image with its annotated
    boxes (found by its pixels): AP 100 over the six others (pycocotools), one image counted unreadable."""
    root = tmp_path / "coco"
    shutil.copytree(coco_tiny, root)
    (root / COCO_SPLIT / "000000454661.jpg").write_bytes(b"\x89PNG but not one")
    ds = COCODetection(root / COCO_SPLIT, root / "annotations" / f"instances_{COCO_SPLIT}.json", Compose([]),
                       filter_empty=False)
    truth = {}
    for i in range(len(ds)):
        image = cv2.imread(ds.get_file_name(i), cv2.IMREAD_COLOR)
        if image is not None:
            truth[image.tobytes()] = ds.get_annotation(i)

    class ExactPredictor:
        def predict(self, image, input_format="BGR"):
            assert isinstance(image, np.ndarray) and input_format == "BGR"
            a = truth[image.tobytes()]
            return {"boxes": a["boxes"].astype(np.float32), "scores": np.ones(len(a["boxes"]), np.float32),
                    "labels": a["labels"]}

    m = predictor_metrics(ExactPredictor(), ds, "coco")
    assert m["AP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0) and m["images_unreadable"] == 1
    assert predictor_metrics(ExactPredictor(), ds, "coco", max_images=3)["images_unreadable"] == 0  # not in the 3
