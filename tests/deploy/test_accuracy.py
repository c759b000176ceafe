"""deploy/accuracy.py (tools/benchmark.py's AP columns): the evaluator's rule for an image that cannot be read: not
predicted, left out of the ground truth, counted."""
from __future__ import annotations

import numpy as np
import pytest

from deploy.accuracy import predictor_metrics
from tests.helpers import coco_with_a_broken_image


def test_an_unreadable_image_is_left_out_of_the_benchmark_ground_truth(coco_tiny, tmp_path):
    """tests/assets with one image replaced by junk bytes; a predictor that answers each image with its annotated
    boxes (found by its pixels): AP 100 over the six others (pycocotools), one image counted unreadable."""
    root, ds, truth = coco_with_a_broken_image(coco_tiny, tmp_path, "000000454661.jpg", b"\x89PNG but not one")

    class ExactPredictor:
        def predict(self, image, input_format="BGR"):
            assert isinstance(image, np.ndarray) and input_format == "BGR"
            a = truth[image.tobytes()]
            return {"boxes": a["boxes"].astype(np.float32), "scores": np.ones(len(a["boxes"]), np.float32),
                    "labels": a["labels"]}

    m = predictor_metrics(ExactPredictor(), ds, "coco")
    assert m["AP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0) and m["images_unreadable"] == 1
    assert predictor_metrics(ExactPredictor(), ds, "coco", max_images=3)["images_unreadable"] == 0  # not in the 3
