"""tools/kmeans_anchors.py: anchor priors from the training boxes (IoU k-means), the boxes at the size the model sees
them, and the config it writes."""
from __future__ import annotations

import numpy as np
import pytest

from config import load_config
from tests.conftest import REPO
from tools.kmeans_anchors import kmeans_anchors, mean_best_iou


def test_mean_best_iou_by_hand():
    assert mean_best_iou(np.array([[10, 10]]), np.array([[10, 10], [20, 20]])) == pytest.approx(1.0)
    # (10, 20) vs (20, 10) at a common centre: overlap 10x10 = 100, union 200 + 200 - 100 = 300
    assert mean_best_iou(np.array([[10, 20]]), np.array([[20, 10]])) == pytest.approx(1 / 3)


def test_kmeans_recovers_known_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[120.0, 60.0], [10.0, 20.0], [50.0, 50.0]])
    wh = np.concatenate([c * rng.uniform(0.95, 1.05, size=(200, 2)) for c in centres])
    sizes, fit = kmeans_anchors(wh, 3, seed=1)
    np.testing.assert_allclose(sizes, centres[[1, 2, 0]], rtol=0.03)  # sorted by area: 200, 2500, 7200
    assert fit > 0.9 and fit == pytest.approx(mean_best_iou(wh, sizes))
    again, _ = kmeans_anchors(wh, 3, seed=1)
    np.testing.assert_array_equal(again, sizes)


def test_kmeans_cli_writes_a_config(tmp_path, capsys):
    from tools.kmeans_anchors import main

    out = tmp_path / "kmeans.yaml"
    main(["--config", str(REPO / "config/small_cpu.yaml"), "-k", "3", "--write", str(out), "--opts",
          f"data.root={tmp_path / 'synth'}", "data.synthetic.num_train=16", "data.synthetic.num_val=4",
          "data.synthetic.image_size=[64, 64]", "data.test_min_size=128", "data.test_max_size=128"])
    printed = capsys.readouterr().out
    assert "mean best IoU" in printed and "configured anchors" in printed
    cfg = load_config(out)  # derives from the quickstart config through _base_
    assert len(cfg.model.anchors.custom_wh) == 3 and cfg.model.num_classes == 5
    areas = [w * h for w, h in cfg.model.anchors.custom_wh]
    assert areas == sorted(areas) and max(max(wh) for wh in cfg.model.anchors.custom_wh) <= 128  # boxes resized x2


def test_kmeans_boxes_follow_the_test_resize_of_each_pipeline(coco_tiny):
    """resize_shortest_edge keeps the aspect ratio (one factor); yolo resizes to test_resize_shape (x and y apart)."""
    import json

    from tests.conftest import COCO_JSON, COCO_SPLIT
    from tools.kmeans_anchors import training_box_sizes

    gt = json.loads(COCO_JSON.read_text())
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    common = {"data.dataset": "coco", "data.root": str(coco_tiny), "data.train_split": COCO_SPLIT,
              "model.num_classes": "auto"}
    for opts, factors in [
        ({"data.pipeline": "yolo", "data.yolo.test_resize_shape": [100, 300]}, lambda h, w: (300 / w, 100 / h)),
        ({"data.test_min_size": 240, "data.test_max_size": 2000}, lambda h, w: (
            (240 if w <= h else int(w * 240 / h + 0.5)) / w, (240 if h <= w else int(h * 240 / w + 0.5)) / h)),
    ]:  # the shorter side becomes 240, the longer is rounded half up
        want = []
        for im in sorted(gt["images"], key=lambda im: im["id"]):
            for a in gt["annotations"]:
                if a["image_id"] == im["id"] and not a.get("iscrowd", 0) and a["bbox"][2] > 0 and a["bbox"][3] > 0:
                    fx, fy = factors(*sizes[im["id"]])
                    want.append((a["bbox"][2] * fx, a["bbox"][3] * fy))  # the boxes lie inside their images
        got = training_box_sizes(load_config(REPO / "config/small_cpu.yaml", {**common, **opts}))
        np.testing.assert_allclose(got, np.array(want), rtol=1e-6, err_msg=str(opts))
