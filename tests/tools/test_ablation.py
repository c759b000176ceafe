"""Ablations: grid matchers, k-means anchors, mixup, EMA, and the ablation runner (spec checks, runs, README table)."""
from __future__ import annotations

import json
import math
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

import ablate
from config import config_to_dict, load_config
from data.mixup import Mixup, mix_samples
from models.anchors import AnchorGenerator
from models.matcher import GridMatcher, build_matcher
from tests.conftest import REPO
from tools import ablation
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


TINY_DATA = {"data.synthetic.num_train": 16, "data.synthetic.num_val": 4, "data.synthetic.image_size": [64, 64],
             "data.train_min_size": [64], "data.train_max_size": 64, "data.test_min_size": 64,
             "data.test_max_size": 64, "solver.batch_size": 4, "solver.reference_batch_size": 4,
             "solver.max_iter": 2, "solver.steps": [1], "solver.warmup_iters": 1, "data.num_workers": 0,
             "model.backbone.width_mult": 0.25, "model.encoder.channels": 32, "model.encoder.mid_channels": 8}


def test_ema_in_training_is_saved_evaluated_and_resumed_exactly(tmp_path):
    from engine.trainer import fit

    torch.set_num_threads(1)
    cfg = load_config(REPO / "config/small_cpu.yaml", {
        **TINY_DATA, "data.root": str(tmp_path / "synth"), "model.backbone.norm": "frozen_bn",
        "train.ema": True, "train.ema_decay": 0.9, "train.ema_ramp": 1, "data.mixup.prob": 0.5})
    cpu = torch.device("cpu")
    fit(cfg, tmp_path / "full", device=cpu, max_iter_override=3, progress=False)
    fit(cfg, tmp_path / "part", device=cpu, max_iter_override=2, progress=False)
    fit(cfg, tmp_path / "part", device=cpu, resume="auto", max_iter_override=3, progress=False)
    a = torch.load(tmp_path / "full" / "last.pth", weights_only=True)
    b = torch.load(tmp_path / "part" / "last.pth", weights_only=True)
    assert a["ema_updates"] == b["ema_updates"] == 3
    for key in ("model", "model_train"):  # "model" = the EMA weights, "model_train" = the trained ones
        for k in a[key]:
            torch.testing.assert_close(b[key][k], a[key][k], rtol=0, atol=0, msg=f"{key}.{k}")
    w = "decoder.cls_score.weight"
    assert not torch.equal(a["model"][w], a["model_train"][w])


# ----------------------------------------------------------------------------- the runner
def _spec(tmp_path, rows, **extra) -> ablation.Spec:
    data = {"name": "tiny", "base": str(REPO / "config/small_cpu.yaml"), "seeds": [0],
            "common": {**TINY_DATA, "data.root": str(tmp_path / "synth")}, "rows": rows, **extra}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _no_runs(monkeypatch):
    def fail(*a, **k):
        raise AssertionError(f"a run was started: {a}")
    monkeypatch.setattr(subprocess, "run", fail)


def test_spec_with_unknown_key_fails_naming_it(tmp_path, monkeypatch, capsys):
    _no_runs(monkeypatch)
    path = _spec(tmp_path, [{"name": "baseline", "overrides": {}}], sedes=[1])
    with pytest.raises(ablation.SpecError, match="unknown spec key 'sedes'"):
        ablation.load_spec(path)
    assert ablate.main([str(path), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "sedes" in capsys.readouterr().err
    path = _spec(tmp_path, [{"name": "baseline", "overides": {}}])
    with pytest.raises(ablation.SpecError, match="unknown row key 'overides'"):
        ablation.load_spec(path)
    path = _spec(tmp_path, [{"name": "a", "overrides": {"train.seed": 3}}])
    with pytest.raises(ablation.SpecError, match="train.seed"):
        ablation.load_spec(path)


def test_override_that_names_no_config_key_fails_before_any_run(tmp_path, monkeypatch):
    _no_runs(monkeypatch)
    runs = tmp_path / "runs"
    rows = [{"name": "baseline", "overrides": {}}, {"name": "bad", "overrides": {"model.matcher.nam": "iou_topk"}}]
    spec = ablation.load_spec(_spec(tmp_path, rows))
    with pytest.raises(ablation.SpecError, match=r"row 'bad'.*model\.matcher\.nam"):
        ablation.run_ablation(spec, runs, tmp_path / "logs")
    rows[1]["overrides"] = {"model.matcher.name": "grid_nowhere"}  # a known key with a bad value
    with pytest.raises(ablation.SpecError, match="model.matcher.name"):
        ablation.run_ablation(ablation.load_spec(_spec(tmp_path, rows)), runs, tmp_path / "logs")
    assert not runs.exists()


def _readme(tmp_path):
    path = tmp_path / "README.md"
    path.write_text("# Project\n\nintro\n\n<!-- ablation:tiny:start -->\nold table\n<!-- ablation:tiny:end -->\n\nrest\n")
    return path


def test_ablation_runs_tabulates_and_skips_finished_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    rows = [{"name": "baseline", "overrides": {}},
            {"name": "grid", "overrides": {"model.matcher.name": "grid_center", "data.random_shift": False}}]
    spec = ablation.load_spec(_spec(tmp_path, rows))
    runs, logs = tmp_path / "runs", tmp_path / "logs"
    status = ablation.run_ablation(spec, runs, logs)
    assert status == {"baseline/seed0": "ran", "grid/seed0": "ran"}
    for row in ("baseline", "grid"):
        copied = logs / "tiny" / row / "seed0"
        assert sorted(p.name for p in copied.iterdir()) == sorted(ablation.LOG_FILES)
        assert not list(copied.glob("*.pth"))
    command = (runs / "tiny" / "grid" / "seed0" / "command.txt").read_text()
    assert "model.matcher.name=grid_center" in command
    # portable: rerunnable from the repository root on another machine, quoted for a shell
    assert command.startswith("python train.py --config ") and sys.executable not in command
    assert shlex.split(command)[1:] == ablation.command(spec, ablation.plan_runs(spec, runs)[1])[1:]
    machine = json.loads((logs / "tiny" / "grid" / "seed0" / "machine.json").read_text())
    assert machine["cpu"] and machine["torch_threads"] >= 1 and machine["torch"] == torch.__version__

    readme = _readme(tmp_path)
    assert ablate.main([str(spec.path), "--table-only", "--readme", str(readme), "--logs-dir", str(logs)]) == 0
    text = readme.read_text()
    assert text.startswith("# Project\n\nintro\n\n<!-- ablation:tiny:start -->\n") and text.endswith("end -->\n\nrest\n")
    assert "old table" not in text
    table_rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in text.splitlines() if line.startswith("| `")}
    for row in ("baseline", "grid"):
        last = json.loads((logs / "tiny" / row / "seed0" / "metrics.jsonl").read_text().splitlines()[-1])
        assert last["iteration"] == 2
        cells = table_rows[f"`{row}`"]
        assert cells[1:4] == [f"{100 * last[k]:.1f}" for k in ("AP", "AP50", "AP75")]
        assert cells[6] == "1/1"
    assert table_rows["`grid`"][7] == "`model.matcher.name=grid_center`, `data.random_shift=false` |"
    before = readme.read_bytes()
    assert not ablation.update_readme(spec, readme, logs)
    assert readme.read_bytes() == before

    # a second ablation run relaunches nothing; a dry run says so
    _no_runs(monkeypatch)
    assert ablation.run_ablation(spec, runs, logs) == {"baseline/seed0": "done", "grid/seed0": "done"}
    capsys.readouterr()
    ablation.run_ablation(spec, runs, logs, dry_run=True)
    assert capsys.readouterr().out.count("# finished") == 2
    # another session: the run folders are gone, the committed logs say the runs are finished
    shutil.rmtree(runs)
    assert ablation.run_ablation(spec, runs, logs) == {"baseline/seed0": "done", "grid/seed0": "done"}
    assert not runs.exists()
    assert "Machine: `" in ablation.render_table(spec, logs) and "all 2 runs" in ablation.render_table(spec, logs)
    # a changed row is not silently mixed with old results
    rows[1]["overrides"]["data.random_shift"] = True
    with pytest.raises(ablation.SpecError, match="data.random_shift"):
        ablation.run_ablation(ablation.load_spec(_spec(tmp_path, rows)), runs, logs)


def test_unfinished_runs_are_resumed_and_commands_follow_the_spec(tmp_path, capsys):
    rows = [{"name": "baseline", "overrides": {}}, {"name": "acc", "overrides": {"solver.base_lr": 0.01}, "accumulate": 2}]
    spec = ablation.load_spec(_spec(tmp_path, rows, launcher="torchrun", nproc_per_node=2))
    runs = tmp_path / "runs"
    (runs / "tiny" / "acc" / "seed0").mkdir(parents=True)
    (runs / "tiny" / "acc" / "seed0" / "last.pth").write_bytes(b"")
    status = ablation.run_ablation(spec, runs, tmp_path / "logs", dry_run=True, python="python")
    assert status == {"baseline/seed0": "planned", "acc/seed0": "planned"}
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("python -m torch.distributed.run --nproc_per_node=2 train.py --config ")
    assert "train.seed=0 --no_progress" in lines[0] and "--resume" not in lines[0]
    assert lines[1].endswith("solver.base_lr=0.01 train.seed=0 --accumulate 2 --resume --no_progress")
    assert "'data.synthetic.image_size=[64, 64]'" in lines[1]
    with pytest.raises(ablation.SpecError, match="no such row"):
        ablation.run_ablation(spec, runs, tmp_path / "logs", only=["nope"], dry_run=True)


def test_collect_copies_finished_runs_and_launches_nothing(tmp_path, monkeypatch, capsys):
    _no_runs(monkeypatch)
    rows = [{"name": "baseline", "overrides": {}}, {"name": "other", "overrides": {"model.decoder.pred_kernel": 1}}]
    spec = ablation.load_spec(_spec(tmp_path, rows))
    runs, logs = tmp_path / "runs", tmp_path / "logs"
    [planned] = [r for r in ablation.plan_runs(spec, runs) if r.row.name == "baseline"]
    done_dir = runs / "tiny" / "baseline" / "seed0"  # a run made by hand from a --dry-run line
    done_dir.mkdir(parents=True)
    record = {"iteration": planned.max_iter, "time_s": 3.0, "AP": 0.25, "AP50": 0.5, "AP75": 0.2}
    (done_dir / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    (done_dir / "model_final.pth").write_bytes(b"not copied")
    status = ablation.run_ablation(spec, runs, logs, collect=True)
    assert status == {"baseline/seed0": "done", "other/seed0": "pending"}
    copied = logs / "tiny" / "baseline" / "seed0"
    assert sorted(p.name for p in copied.iterdir()) == ["done.json", "metrics.jsonl"]
    assert json.loads((copied / "done.json").read_text())["AP50"] == 0.5
    assert not (logs / "tiny" / "other").exists()
    readme = _readme(tmp_path)
    assert ablate.main([str(spec.path), "--collect", "--runs-dir", str(runs), "--logs-dir", str(logs),
                        "--readme", str(readme)]) == 0
    assert "| `baseline` | 25.0 | 50.0 | 20.0 | (ref) | 3 s | 1/1 | – |" in readme.read_text()


def test_table_means_stds_deltas_and_missing_rows(tmp_path):
    rows = [{"name": "base", "overrides": {}}, {"name": "x", "overrides": {"model.decoder.pred_kernel": 1}},
            {"name": "empty", "overrides": {"model.loss.image_mask": True}},
            {"name": "y", "overrides": {"model.decoder.pred_kernel": 1, "data.random_shift": False}}]
    path = _spec(tmp_path, rows, seeds=[0, 1, 2])
    spec = ablation.load_spec(path)
    logs = tmp_path / "logs"

    def write(row, seed, ap50, records=None):
        folder = logs / "tiny" / row / f"seed{seed}"
        folder.mkdir(parents=True)
        records = records or [{"iteration": 2, "time_s": 60.0, "AP": ap50 / 2, "AP50": ap50, "AP75": ap50 / 4}]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    for seed, v in enumerate((0.30, 0.32, 0.34)):
        write("base", seed, v)
    # resumed once: time_s restarts, so the run took 100 + 50 s; an unfinished seed does not count
    write("x", 0, 0.40, [{"iteration": 1, "time_s": 100.0}, {"iteration": 2, "time_s": 50.0, "AP": 0.2, "AP50": 0.4,
                                                            "AP75": 0.1}])
    write("x", 1, 0.50, [{"iteration": 1, "time_s": 30.0, "AP50": 0.5}])
    write("y", 0, 0.35)
    write("y", 1, 0.33)
    table = ablation.render_table(spec, logs)
    lines = table.splitlines()
    assert "| `base` | 16.0 ± 1.0 | 32.0 ± 2.0 | 8.0 ± 0.5 | (ref) | 60 s | 3/3 | – |" in lines
    # Δ pairs seeds: x's only finished seed 0 against base's seed 0 (not base's mean over 3 seeds)
    assert "| `x` | 20.0 | 40.0 | 10.0 | +10.0 | 2.5 min | 1/3 | `model.decoder.pred_kernel=1` |" in lines
    # y - base per seed: +5.0, +1.0 -> mean +3.0, sample std 2.8
    assert any(line.startswith("| `y` | 17.0 ± 0.7 | 34.0 ± 1.4 | 8.5 ± 0.4 | +3.0 ± 2.8 | 60 s | 2/3 |") for line in lines)
    assert "| `empty` | – | – | – | – | – | 0/3 | `model.loss.image_mask=true` |" in lines
    assert table == ablation.render_table(spec, logs)
    with pytest.raises(ablation.SpecError, match="<!-- ablation:tiny:start -->"):
        readme = tmp_path / "NO_MARKERS.md"
        readme.write_text("# nothing\n")
        ablation.update_readme(spec, readme, logs)


def test_table_metric_columns_follow_the_spec(tmp_path):
    rows = [{"name": "base", "overrides": {}}, {"name": "x", "overrides": {"model.decoder.pred_kernel": 1}}]
    spec = ablation.load_spec(_spec(tmp_path, rows, metrics=["AP50", "APs", "APl"]))
    assert spec.metrics == ("AP50", "APs", "APl")
    for row, ap50 in (("base", 0.5), ("x", 0.6)):
        folder = tmp_path / "logs" / "tiny" / row / "seed0"
        folder.mkdir(parents=True)
        record = {"iteration": 2, "time_s": 60.0, "AP": 0.3, "AP50": ap50, "AP75": 0.2, "APs": 0.1, "APl": -1.0}
        (folder / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    lines = ablation.render_table(spec, tmp_path / "logs").splitlines()
    assert "| row | AP50 | APs | APl | Δ AP50 | time | seeds | overrides |" in lines
    assert "|---|---|---|---|---|---|---|---|" in lines
    # APl -1 (no large object in the gt, pycocotools' "undefined") is shown as missing
    assert "| `base` | 50.0 | 10.0 | – | (ref) | 60 s | 1/1 | – |" in lines
    assert "| `x` | 60.0 | 10.0 | – | +10.0 | 60 s | 1/1 | `model.decoder.pred_kernel=1` |" in lines
    default = ablation.load_spec(_spec(tmp_path, rows))
    assert default.metrics == ("AP", "AP50", "AP75")
    for bad in (["AP50", "APxl"], [], ["AP", "AP"], "AP50"):
        with pytest.raises(ablation.SpecError, match="spec key 'metrics'"):
            ablation.load_spec(_spec(tmp_path, rows, metrics=bad))


def test_coco_stats_spec_asks_the_papers_questions():
    spec = ablation.load_spec(REPO / "ablations" / "synthetic_coco_stats.yaml")
    assert [r.name for r in spec.rows] == [
        "baseline", "no_encoder", "projector_only", "no_shortcut", "dilations_1", "blocks_2", "max_iou", "atss", "top1",
        "no_implicit_objectness", "no_random_shift", "no_ignore_thresholds"]
    assert spec.seeds == (0, 1, 2) and {"APs", "APm", "APl", "AP50"} <= set(spec.metrics)
    runs = ablation.plan_runs(spec)
    assert len(runs) == 36 and all(r.config["data"]["synthetic"]["stats"] == "coco" for r in runs)
    small = config_to_dict(load_config(REPO / "config/small_cpu.yaml"))["model"]
    assert runs[0].config["model"] == small  # the baseline row is the small CPU model (the quickstart's) as it is


def test_shipped_specs_are_valid():
    readme = (REPO / "README.md").read_text()
    for name, min_rows in (("synthetic", 8), ("synthetic_more", 15), ("synthetic_padding", 3), ("coco_r50", 8), ("synthetic_coco_stats", 12)):
        spec = ablation.load_spec(REPO / "ablations" / f"{name}.yaml")
        runs = ablation.plan_runs(spec)
        assert spec.name == name and spec.rows[0].name == "baseline" and len(spec.rows) >= min_rows
        assert len(runs) == len(spec.rows) * len(spec.seeds)
        start, end = ablation.markers(name)
        assert readme.count(start) == 1 and readme.count(end) == 1, f"README.md lacks the table markers of {name}"


@pytest.mark.parametrize("name", ["synthetic", "synthetic_more", "synthetic_padding", "coco_r50", "synthetic_coco_stats"])
def test_readme_tables_are_rebuilt_byte_for_byte_from_the_committed_logs(name):
    """What ``ablate.py SPEC --table-only`` writes is what README.md holds: a pure function of ablations/runs/."""
    spec = ablation.load_spec(REPO / "ablations" / f"{name}.yaml")
    readme = (REPO / "README.md").read_text()
    start, end = ablation.markers(name)
    committed = readme[readme.index(start) + len(start):readme.index(end)]
    assert committed == "\n" + ablation.render_table(spec, REPO / "ablations" / "runs") + "\n"


def test_padding_spec_asks_the_image_mask_question_on_padded_batches():
    spec = ablation.load_spec(REPO / "ablations" / "synthetic_padding.yaml")
    assert [r.name for r in spec.rows] == ["baseline", "image_mask_on", "no_random_shift"] and len(spec.seeds) == 3
    cfg = load_config(REPO / "config" / "small_cpu.yaml", dict(spec.common))
    assert cfg.data.synthetic.size_range and cfg.data.root != load_config(REPO / "config/small_cpu.yaml").data.root


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
