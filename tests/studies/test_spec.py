"""Study specs: their checks (before anything runs) and the shipped specs."""
from __future__ import annotations

import pytest

import ablate
from config import config_to_dict, load_config
from studies.local import run_ablation
from studies.spec import SpecError, load_spec, plan_runs
from studies.table import markers
from tests.conftest import REPO
from tests.studies.specs import no_runs, write_spec


def test_spec_with_unknown_key_fails_naming_it(tmp_path, monkeypatch, capsys):
    no_runs(monkeypatch)
    path = write_spec(tmp_path, [{"name": "baseline", "overrides": {}}], sedes=[1])
    with pytest.raises(SpecError, match="unknown spec key 'sedes'"):
        load_spec(path)
    assert ablate.main([str(path), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "sedes" in capsys.readouterr().err
    path = write_spec(tmp_path, [{"name": "baseline", "overides": {}}])
    with pytest.raises(SpecError, match="unknown row key 'overides'"):
        load_spec(path)
    path = write_spec(tmp_path, [{"name": "a", "overrides": {"train.seed": 3}}])
    with pytest.raises(SpecError, match="train.seed"):
        load_spec(path)


def test_override_that_names_no_config_key_fails_before_any_run(tmp_path, monkeypatch):
    no_runs(monkeypatch)
    runs = tmp_path / "runs"
    rows = [{"name": "baseline", "overrides": {}}, {"name": "bad", "overrides": {"model.matcher.nam": "iou_topk"}}]
    spec = load_spec(write_spec(tmp_path, rows))
    with pytest.raises(SpecError, match=r"row 'bad'.*model\.matcher\.nam"):
        run_ablation(spec, runs, tmp_path / "logs")
    rows[1]["overrides"] = {"model.matcher.name": "grid_nowhere"}  # a known key with a bad value
    with pytest.raises(SpecError, match="model.matcher.name"):
        run_ablation(load_spec(write_spec(tmp_path, rows)), runs, tmp_path / "logs")
    assert not runs.exists()


def test_coco_stats_spec_asks_the_papers_questions():
    spec = load_spec(REPO / "ablations" / "synthetic_coco_stats.yaml")
    assert [r.name for r in spec.rows] == [
        "baseline", "no_encoder", "projector_only", "no_shortcut", "dilations_1", "blocks_2", "max_iou", "atss", "top1",
        "no_implicit_objectness", "no_random_shift", "no_ignore_thresholds"]
    assert spec.seeds == (0, 1, 2) and {"APs", "APm", "APl", "AP50"} <= set(spec.metrics)
    runs = plan_runs(spec)
    assert len(runs) == 36 and all(r.config["data"]["synthetic"]["stats"] == "coco" for r in runs)
    small = config_to_dict(load_config(REPO / "config/small_cpu.yaml"))["model"]
    assert runs[0].config["model"] == small  # the baseline row is the small CPU model (the quickstart's) as it is


def test_shipped_specs_are_valid():
    readme = (REPO / "README.md").read_text()
    for name, min_rows in (("synthetic", 8), ("synthetic_more", 15), ("synthetic_padding", 3), ("coco_r50", 8),
                           ("synthetic_coco_stats", 12)):
        spec = load_spec(REPO / "ablations" / f"{name}.yaml")
        runs = plan_runs(spec)
        assert spec.name == name and spec.rows[0].name == "baseline" and len(spec.rows) >= min_rows
        assert len(runs) == len(spec.rows) * len(spec.seeds)
        start, end = markers(name)
        assert readme.count(start) == 1 and readme.count(end) == 1, f"README.md lacks the table markers of {name}"


def test_padding_spec_asks_the_image_mask_question_on_padded_batches():
    spec = load_spec(REPO / "ablations" / "synthetic_padding.yaml")
    assert [r.name for r in spec.rows] == ["baseline", "image_mask_on", "no_random_shift"] and len(spec.seeds) == 3
    cfg = load_config(REPO / "config" / "small_cpu.yaml", dict(spec.common))
    assert cfg.data.synthetic.size_range and cfg.data.root != load_config(REPO / "config/small_cpu.yaml").data.root
