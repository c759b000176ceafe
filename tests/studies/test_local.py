"""The local launcher: runs, resumes, skips what is finished, collects what finished elsewhere."""
from __future__ import annotations

import json
import shlex
import shutil
import sys

import pytest
import torch

import ablate
from studies.local import run_ablation
from studies.logs import LOG_FILES
from studies.spec import SpecError, command, load_spec, plan_runs
from studies.table import render_table, update_readme
from tests.studies.specs import no_runs, write_readme, write_spec


def test_ablation_runs_tabulates_and_skips_finished_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    rows = [{"name": "baseline", "overrides": {}},
            {"name": "grid", "overrides": {"model.matcher.name": "grid_center", "data.random_shift": False}}]
    spec = load_spec(write_spec(tmp_path, rows))
    runs, logs = tmp_path / "runs", tmp_path / "logs"
    status = run_ablation(spec, runs, logs)
    assert status == {"baseline/seed0": "ran", "grid/seed0": "ran"}
    for row in ("baseline", "grid"):
        copied = logs / "tiny" / row / "seed0"
        assert sorted(p.name for p in copied.iterdir()) == sorted(LOG_FILES)
        assert not list(copied.glob("*.pth"))
    written = (runs / "tiny" / "grid" / "seed0" / "command.txt").read_text()
    assert "model.matcher.name=grid_center" in written
    # portable: rerunnable from the repository root on another machine, quoted for a shell
    assert written.startswith("python train.py --config ") and sys.executable not in written
    assert shlex.split(written)[1:] == command(spec, plan_runs(spec, runs)[1])[1:]
    machine = json.loads((logs / "tiny" / "grid" / "seed0" / "machine.json").read_text())
    assert machine["cpu"] and machine["torch_threads"] >= 1 and machine["torch"] == torch.__version__

    readme = write_readme(tmp_path)
    assert ablate.main([str(spec.path), "--table-only", "--readme", str(readme), "--logs-dir", str(logs)]) == 0
    text = readme.read_text()
    assert text.startswith("# Project\n\nintro\n\n<!-- ablation:tiny:start -->\n")
    assert text.endswith("end -->\n\nrest\n")
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
    assert not update_readme(spec, readme, logs)
    assert readme.read_bytes() == before

    # a second ablation run relaunches nothing; a dry run says so
    no_runs(monkeypatch)
    assert run_ablation(spec, runs, logs) == {"baseline/seed0": "done", "grid/seed0": "done"}
    capsys.readouterr()
    run_ablation(spec, runs, logs, dry_run=True)
    assert capsys.readouterr().out.count("# finished") == 2
    # another session: the run folders are gone, the committed logs say the runs are finished
    shutil.rmtree(runs)
    assert run_ablation(spec, runs, logs) == {"baseline/seed0": "done", "grid/seed0": "done"}
    assert not runs.exists()
    assert "Machine: `" in render_table(spec, logs) and "all 2 runs" in render_table(spec, logs)
    # a changed row is not silently mixed with old results
    rows[1]["overrides"]["data.random_shift"] = True
    with pytest.raises(SpecError, match="data.random_shift"):
        run_ablation(load_spec(write_spec(tmp_path, rows)), runs, logs)


def test_unfinished_runs_are_resumed_and_commands_follow_thewrite_spec(tmp_path, capsys):
    rows = [{"name": "baseline", "overrides": {}},
            {"name": "acc", "overrides": {"solver.base_lr": 0.01}, "accumulate": 2}]
    spec = load_spec(write_spec(tmp_path, rows, launcher="torchrun", nproc_per_node=2))
    runs = tmp_path / "runs"
    (runs / "tiny" / "acc" / "seed0").mkdir(parents=True)
    (runs / "tiny" / "acc" / "seed0" / "last.pth").write_bytes(b"")
    status = run_ablation(spec, runs, tmp_path / "logs", dry_run=True, python="python")
    assert status == {"baseline/seed0": "planned", "acc/seed0": "planned"}
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("python -m torch.distributed.run --nproc_per_node=2 train.py --config ")
    assert "train.seed=0 --no_progress" in lines[0] and "--resume" not in lines[0]
    assert lines[1].endswith("solver.base_lr=0.01 train.seed=0 --accumulate 2 --resume --no_progress")
    assert "'data.synthetic.image_size=[64, 64]'" in lines[1]
    with pytest.raises(SpecError, match="no such row"):
        run_ablation(spec, runs, tmp_path / "logs", only=["nope"], dry_run=True)


def test_collect_copies_finished_runs_and_launches_nothing(tmp_path, monkeypatch, capsys):
    no_runs(monkeypatch)
    rows = [{"name": "baseline", "overrides": {}}, {"name": "other", "overrides": {"model.decoder.pred_kernel": 1}}]
    spec = load_spec(write_spec(tmp_path, rows))
    runs, logs = tmp_path / "runs", tmp_path / "logs"
    [planned] = [r for r in plan_runs(spec, runs) if r.row.name == "baseline"]
    done_dir = runs / "tiny" / "baseline" / "seed0"  # a run made by hand from a --dry-run line
    done_dir.mkdir(parents=True)
    record = {"iteration": planned.max_iter, "time_s": 3.0, "AP": 0.25, "AP50": 0.5, "AP75": 0.2}
    (done_dir / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    (done_dir / "model_final.pth").write_bytes(b"not copied")
    status = run_ablation(spec, runs, logs, collect=True)
    assert status == {"baseline/seed0": "done", "other/seed0": "pending"}
    copied = logs / "tiny" / "baseline" / "seed0"
    assert sorted(p.name for p in copied.iterdir()) == ["done.json", "metrics.jsonl"]
    assert json.loads((copied / "done.json").read_text())["AP50"] == 0.5
    assert not (logs / "tiny" / "other").exists()
    readme = write_readme(tmp_path)
    assert ablate.main([str(spec.path), "--collect", "--runs-dir", str(runs), "--logs-dir", str(logs),
                        "--readme", str(readme)]) == 0
    assert "| `baseline` | 25.0 | 50.0 | 20.0 | (ref) | 3 s | 1/1 | – |" in readme.read_text()
