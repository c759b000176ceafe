"""engine/run_folder.py and engine/run_start.py: a run folder is never overwritten by accident, and a run that
stopped on a user error is not replayed by an elastic restart."""
from __future__ import annotations

import json

import pytest
import torch

import train
from tests.conftest import REPO
from tests.helpers import SMALL, records
from utils.script import run_script


def test_the_same_command_twice_never_destroys_a_run(tmp_path, capsys):
    """Run 1: 6 steps. The same command with --max_iter 3 and no --resume continues run 1 (complete: nothing to
    do); another config stops in one line and touches nothing; --overwrite starts over."""
    out = tmp_path / "run"
    head = ["--config", str(REPO / "config/small_cpu.yaml"), "--output_dir", str(out), "--no_progress"]
    opts = ["--opts", f"data.root={tmp_path / 'data'}", *SMALL, "solver.max_iter=6", "solver.steps=[5]"]
    argv = head + opts
    train.main(argv)
    before = {name: (out / name).read_bytes() for name in ("last.pth", "best.pth", "metrics.jsonl")}
    train.main(head + ["--max_iter", "3"] + opts)
    assert {name: (out / name).read_bytes() for name in before} == before
    assert "holds a run of this config: continuing it" in (out / "log.txt").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_script(lambda: train.main(argv + ["solver.base_lr=0.002"]))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {out} already holds another config (keys solver.base_lr): continue it with --resume, "
                   f"choose another --output_dir, or pass --overwrite to discard it"]
    assert {name: (out / name).read_bytes() for name in before} == before
    train.main(["--overwrite"] + argv + ["solver.base_lr=0.002"])
    logged = records(out)
    assert logged[-1]["iteration"] == 6 and (out / "metrics.jsonl").read_bytes() != before["metrics.jsonl"]
    assert torch.load(out / "last.pth", weights_only=True)["config"]["solver"]["base_lr"] == 0.002


def test_a_user_error_is_recorded_and_an_elastic_restart_of_the_same_command_ends_at_once(tmp_path, monkeypatch):
    from engine.run_start import RestartRefused, user_errors_end_the_run
    from utils.errors import UserError

    out, argv = tmp_path / "run", ["--output_dir", "run", "--opts", "a=1"]
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    with pytest.raises(UserError, match="the data went away"):
        with user_errors_end_the_run(out, argv):
            raise UserError("the data went away")
    record = json.loads((out / "stopped.json").read_text())
    assert record["error"] == "the data went away" and record["argv"] == argv
    ran = []
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # torchrun's restart of the same command
    with pytest.raises(RestartRefused, match="elastic restart 1 does not continue this run: it stopped at"):
        with user_errors_end_the_run(out, argv):
            ran.append(1)
    with user_errors_end_the_run(out, argv + ["b=2"]):  # another command is not that run's restart
        ran.append(2)
    assert ran == [2]
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")  # a new launch: the user fixed what was wrong
    with user_errors_end_the_run(out, argv):
        ran.append(3)
    assert ran == [2, 3] and not (out / "stopped.json").exists()
