"""Ablations: grid matchers, k-means anchors, mixup, EMA (the ablation runner: tests/studies/)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from config import load_config
from data.mixup import Mixup, mix_samples
from models.anchors import AnchorGenerator
from models.matcher import GridMatcher, build_matcher
from tests.conftest import REPO
from tests.studies.specs import TINY_DATA
from engine.ema import ModelEMA
from tools.kmeans_anchors import kmeans_anchors, mean_best_iou


# ----------------------------------------------------------------------------- grid matchers
# A 3x3 map, stride 32, offset 0, two anchors per cell (32 and 64 px): anchor centres at x, y in {0, 32, 64};
# anchor index = (y_cell * 3 + x_cell) * 2 + a, a = 0 for the 32-px anchor and 1 for the 64-px one.
ANCHORS = AnchorGenerator(32, (32, 64), (1.0,))(3, 3)


def _grid(mode, choice="best", anchors=ANCHORS, stride=32, a=2, offset=0.0):
    def match(*boxes):
        gt = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        m = GridMatcher(mode, stride=stride, num_anchors=a, offset=offset, anchor_choice=choice)(
            anchors[None], anchors, [gt])[0]
        return list(zip(m.tgt.tolist(), m.src.tolist()))
    return match


def test_grid_center_takes_the_cell_of_the_nearest_anchor_centre():
    center = _grid("center")
    # centre (40, 20): x cell floor(40/32 + 1/2) = 1, y cell floor(20/32 + 1/2) = 1 -> cell 4; 30x30 fits 32 px best
    assert center([25, 5, 55, 35]) == [(0, 8)]
    assert _grid("center", "all")([25, 5, 55, 35]) == [(0, 8), (0, 9)]
    # centre (47.9, 15.9) is nearer the anchor at (32, 0) than any other: cell (1, 0); a 60x60 box fits 64 px best
    assert center([17.9, -14.1, 77.9, 45.9]) == [(0, 3)]
    # exactly half-way, centre (48, 16): the right / lower cell (2, 1)
    assert center([38, 6, 58, 26]) == [(0, 10)]
    # a centre beyond the map is clamped to the last cell (2, 2); two boxes come out box by box
    assert center([90, 90, 110, 110], [0, 0, 10, 10]) == [(0, 16), (1, 0)]


def test_grid_center_with_offset_half_is_yolo_floor():
    anchors = AnchorGenerator(32, (32,), (1.0,), offset=0.5)(2, 2)  # centres 16, 48: cell x covers [32x, 32x + 32)
    center = _grid("center", anchors=anchors, a=1, offset=0.5)
    assert center([21.9, 30, 41.9, 50]) == [(0, 2)]  # centre (31.9, 40): floor(31.9/32) = 0, floor(40/32) = 1
    assert center([22, 30, 42, 50]) == [(0, 3)]  # centre (32, 40): cell (1, 1)


def test_grid_neighbors_takes_the_3x3_cells_cut_at_the_border():
    # centre (5, 5) -> cell (0, 0); neighbours inside the map: (0,0) (1,0) (0,1) (1,1); 60x60 -> the 64-px anchor
    assert _grid("neighbors")([-25, -25, 35, 35]) == [(0, 1), (0, 3), (0, 7), (0, 9)]
    # centre (32, 32) -> cell (1, 1): all nine cells, 32-px anchor
    assert [s for _, s in _grid("neighbors")([20, 20, 44, 44])] == [0, 2, 4, 6, 8, 10, 12, 14, 16]


def test_grid_inside_takes_cells_whose_anchor_centre_is_in_the_box():
    inside = _grid("inside", "all")
    # x in (10, 70) holds centres 32, 64; y in (-5, 40) holds 0, 32 -> cells (1,0) (2,0) (1,1) (2,1) = 1, 2, 4, 5
    assert [s for _, s in inside([10, -5, 70, 40])] == [2, 3, 4, 5, 8, 9, 10, 11]
    # best shape of a 60x45 box: IoU 2700/4096 = 0.66 with 64 px, 1024/2700 = 0.38 with 32 px
    assert [s for _, s in _grid("inside")([10, -5, 70, 40])] == [3, 5, 9, 11]
    # strictly inside: a box edge through an anchor centre does not take it
    assert [s for _, s in _grid("inside")([32, 32, 60, 60])] == [8]  # no centre inside -> falls back to centre cell (1,1)
    # an 8x8 box holds no anchor centre: its centre cell (1, 1)
    assert _grid("inside")([36, 36, 44, 44]) == [(0, 8)]


def test_grid_matcher_batch_with_an_empty_image_and_builder():
    m = build_matcher("grid_center", stride=32, num_anchors=2)
    assert isinstance(m, GridMatcher) and m.mode == "center" and m.anchor_choice == "best"
    out = m(ANCHORS[None].repeat(2, 1, 1), ANCHORS, [torch.tensor([[25.0, 5, 55, 35]]), torch.zeros(0, 4)])
    assert out[0].src.tolist() == [8] and out[0].tgt.tolist() == [0]
    assert out[1].src.numel() == 0 and out[1].tgt.numel() == 0 and out[1].ignore is None


def test_grid_matcher_config_builds_a_model_that_trains():
    from models import build_model

    cfg = load_config(REPO / "config/small_cpu.yaml", {
        "model.matcher.name": "grid_neighbors", "model.backbone.width_mult": 0.25, "model.encoder.channels": 32,
        "model.encoder.mid_channels": 8, "model.anchors.custom_wh": [[20, 20], [40, 30]]})
    model = build_model(cfg).train()
    assert isinstance(model.assigner.matcher, GridMatcher) and model.assigner.matcher.num_anchors == 2
    out = model([torch.rand(3, 64, 96) * 255], [{"boxes": torch.tensor([[10.0, 10, 40, 50]]), "labels": torch.tensor([1])}])
    assert torch.isfinite(out["loss_cls"]) and out["num_foreground"] > 0


# ----------------------------------------------------------------------------- k-means anchors
def test_custom_wh_anchors_replace_sizes_times_ratios():
    gen = AnchorGenerator(32, (32, 64), (0.5, 1.0), custom_wh=((10, 20), (30, 40)))
    assert gen.num_anchors == 2
    assert gen(1, 2).tolist() == [[-5, -10, 5, 10], [-15, -20, 15, 20], [27, -10, 37, 10], [17, -20, 47, 20]]


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


# ----------------------------------------------------------------------------- mixup
def _sample(value, h, w, boxes, labels):
    return (np.full((h, w, 3), value, dtype=np.uint8),
            {"boxes": np.asarray(boxes, dtype=np.float64).reshape(-1, 4), "labels": np.asarray(labels, dtype=np.int64),
             "image_id": value, "crowd_boxes": np.zeros((0, 4))})


def test_mixup_blends_pixels_and_keeps_both_box_sets():
    a = _sample(200, 4, 6, [[0, 0, 2, 2]], [1])
    b = _sample(50, 4, 6, [[1, 1, 5, 3], [2, 0, 4, 4]], [0, 3])
    image, target = mix_samples(a, b, 0.3)
    np.testing.assert_allclose(image, np.full((4, 6, 3), 0.3 * 200 + 0.7 * 50), rtol=1e-6)
    assert target["boxes"].tolist() == [[0, 0, 2, 2], [1, 1, 5, 3], [2, 0, 4, 4]]
    assert target["labels"].tolist() == [1, 0, 3] and target["image_id"] == 200
    # b larger than a: cut to a's canvas, its boxes clipped, the one left outside dropped
    b = _sample(50, 8, 8, [[1, 1, 7, 7], [6.5, 5, 8, 8]], [0, 3])
    image, target = mix_samples(a, b, 0.5)
    assert image.shape == (4, 6, 3) and np.all(image == 125.0)
    assert target["boxes"].tolist() == [[0, 0, 2, 2], [1, 1, 6, 4]] and target["labels"].tolist() == [1, 0]
    # b smaller than a: outside b the image is lam * a
    image, _ = mix_samples(a, _sample(50, 2, 3, [], []), 0.5)
    assert image[0, 0, 0] == 125.0 and image[3, 5, 0] == 100.0


def test_mixup_draws_from_the_sample_rng():
    """Mixup is a multi-image step: its draws (and its partner's augmentation) come from the sample's rng."""
    toy = [_sample(10 * (i + 1), 4, 4, [[i, i, i + 1, i + 1]], [i % 2]) for i in range(4)]  # raw samples
    mix = Mixup(lambda image, target, rng: (image, target), toy, prob=1.0, alpha=0.0)  # alpha <= 0: lam = 0.5
    image, target = mix(*toy[0], np.random.default_rng(7))
    j = int(target["boxes"][1, 0])  # the second box is the partner's: [j, j, j+1, j+1]
    assert np.all(image == 0.5 * 10 + 0.5 * 10 * (j + 1)) and len(target["boxes"]) == 2
    again, _ = mix(*toy[0], np.random.default_rng(7))
    assert np.array_equal(image, again)
    plain = Mixup(lambda image, target, rng: (image, target), toy, prob=0.0)
    assert plain(*toy[1], np.random.default_rng(7))[0].dtype == np.uint8 and len(plain(*toy[1], None)[1]["boxes"]) == 1


# ----------------------------------------------------------------------------- EMA
def test_ema_follows_its_update_rule():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = ModelEMA(model, decay=0.9, ramp=1.0)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    d1 = 0.9 * (1 - math.exp(-1))  # 0.568909
    assert ema.current_decay() == pytest.approx(d1)
    assert ema.module.weight.item() == pytest.approx((1 - d1) * 1.0)  # 0.431091
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)
    d2 = 0.9 * (1 - math.exp(-2))  # 0.778200
    assert ema.module.weight.item() == pytest.approx(d2 * (1 - d1) + (1 - d2) * 3.0)  # 0.999856
    assert not ema.module.weight.requires_grad and ema.updates == 2
    # no ramp: constant decay; state_dict round trip
    flat = ModelEMA(model, decay=0.5, ramp=0)
    with torch.no_grad():
        model.weight.fill_(5.0)
    flat.update(model)
    assert flat.module.weight.item() == pytest.approx(0.5 * 3.0 + 0.5 * 5.0)
    restored = ModelEMA(torch.nn.Linear(1, 1, bias=False), decay=0.5, ramp=0)
    restored.load_state_dict(flat.state_dict())
    assert restored.module.weight.item() == pytest.approx(4.0) and restored.updates == 1


def test_ema_averages_float_buffers_and_copies_integer_ones():
    bn = torch.nn.BatchNorm1d(1)
    ema = ModelEMA(bn, decay=0.5, ramp=0)
    bn.train()(torch.tensor([[1.0], [3.0]]))  # running_mean 0 -> 0.2, num_batches_tracked 0 -> 1
    ema.update(bn)
    assert ema.module.running_mean.item() == pytest.approx(0.1) and ema.module.num_batches_tracked.item() == 1


def test_ema_in_training_is_saved_evaluated_and_resumed_exactly(tmp_path):
    from engine.trainer import RunOptions, fit

    torch.set_num_threads(1)
    cfg = load_config(REPO / "config/small_cpu.yaml", {
        **TINY_DATA, "data.root": str(tmp_path / "synth"), "model.backbone.norm": "frozen_bn",
        "train.ema": True, "train.ema_decay": 0.9, "train.ema_ramp": 1, "data.mixup.prob": 0.5})
    cpu = torch.device("cpu")
    fit(cfg, RunOptions(tmp_path / "full", device=cpu, max_iter=3, progress=False))
    fit(cfg, RunOptions(tmp_path / "part", device=cpu, max_iter=2, progress=False))
    fit(cfg, RunOptions(tmp_path / "part", device=cpu, resume="auto", max_iter=3, progress=False))
    a = torch.load(tmp_path / "full" / "last.pth", weights_only=True)
    b = torch.load(tmp_path / "part" / "last.pth", weights_only=True)
    assert a["ema_updates"] == b["ema_updates"] == 3
    for key in ("model", "model_train"):  # "model" = the EMA weights, "model_train" = the trained ones
        for k in a[key]:
            torch.testing.assert_close(b[key][k], a[key][k], rtol=0, atol=0, msg=f"{key}.{k}")
    w = "decoder.cls_score.weight"
    assert not torch.equal(a["model"][w], a["model_train"][w])


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
