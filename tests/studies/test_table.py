"""The README table of a study: a pure function of its committed logs."""
from __future__ import annotations

import json

import pytest

from studies.spec import SpecError, load_spec
from studies.table import markers, render_table, update_readme
from tests.conftest import REPO
from tests.studies.specs import write_spec


def test_table_means_stds_deltas_and_missing_rows(tmp_path):
    rows = [{"name": "base", "overrides": {}}, {"name": "x", "overrides": {"model.decoder.pred_kernel": 1}},
            {"name": "empty", "overrides": {"model.loss.image_mask": True}},
            {"name": "y", "overrides": {"model.decoder.pred_kernel": 1, "data.random_shift": False}}]
    path = write_spec(tmp_path, rows, seeds=[0, 1, 2])
    spec = load_spec(path)
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
    table = render_table(spec, logs)
    lines = table.splitlines()
    assert "| `base` | 16.0 ± 1.0 | 32.0 ± 2.0 | 8.0 ± 0.5 | (ref) | 60 s | 3/3 | – |" in lines
    # Δ pairs seeds: x's only finished seed 0 against base's seed 0 (not base's mean over 3 seeds)
    assert "| `x` | 20.0 | 40.0 | 10.0 | +10.0 | 2.5 min | 1/3 | `model.decoder.pred_kernel=1` |" in lines
    # y - base per seed: +5.0, +1.0 -> mean +3.0, sample std 2.8
    assert any(line.startswith("| `y` | 17.0 ± 0.7 | 34.0 ± 1.4 | 8.5 ± 0.4 | +3.0 ± 2.8 | 60 s | 2/3 |")
               for line in lines)
    assert "| `empty` | – | – | – | – | – | 0/3 | `model.loss.image_mask=true` |" in lines
    assert table == render_table(spec, logs)
    with pytest.raises(SpecError, match="<!-- ablation:tiny:start -->"):
        readme = tmp_path / "NO_MARKERS.md"
        readme.write_text("# nothing\n")
        update_readme(spec, readme, logs)


def test_table_metric_columns_follow_thewrite_spec(tmp_path):
    rows = [{"name": "base", "overrides": {}}, {"name": "x", "overrides": {"model.decoder.pred_kernel": 1}}]
    spec = load_spec(write_spec(tmp_path, rows, metrics=["AP50", "APs", "APl"]))
    assert spec.metrics == ("AP50", "APs", "APl")
    for row, ap50 in (("base", 0.5), ("x", 0.6)):
        folder = tmp_path / "logs" / "tiny" / row / "seed0"
        folder.mkdir(parents=True)
        record = {"iteration": 2, "time_s": 60.0, "AP": 0.3, "AP50": ap50, "AP75": 0.2, "APs": 0.1, "APl": -1.0}
        (folder / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    lines = render_table(spec, tmp_path / "logs").splitlines()
    assert "| row | AP50 | APs | APl | Δ AP50 | time | seeds | overrides |" in lines
    assert "|---|---|---|---|---|---|---|---|" in lines
    # APl -1 (no large object in the gt, pycocotools' "undefined") is shown as missing
    assert "| `base` | 50.0 | 10.0 | – | (ref) | 60 s | 1/1 | – |" in lines
    assert "| `x` | 60.0 | 10.0 | – | +10.0 | 60 s | 1/1 | `model.decoder.pred_kernel=1` |" in lines
    default = load_spec(write_spec(tmp_path, rows))
    assert default.metrics == ("AP", "AP50", "AP75")
    for bad in (["AP50", "APxl"], [], ["AP", "AP"], "AP50"):
        with pytest.raises(SpecError, match="spec key 'metrics'"):
            load_spec(write_spec(tmp_path, rows, metrics=bad))


@pytest.mark.parametrize("name", ["synthetic", "synthetic_more", "synthetic_padding", "coco_r50",
                                  "synthetic_coco_stats"])
def test_readme_tables_are_rebuilt_byte_for_byte_from_the_committed_logs(name):
    """What ``ablate.py SPEC --table-only`` writes is what README.md holds: a pure function of ablations/runs/."""
    spec = load_spec(REPO / "ablations" / f"{name}.yaml")
    readme = (REPO / "README.md").read_text()
    start, end = markers(name)
    committed = readme[readme.index(start) + len(start):readme.index(end)]
    assert committed == "\n" + render_table(spec, REPO / "ablations" / "runs") + "\n"
