"""A train.py run killed with SIGKILL at its worst moments, then resumed, ends as an uninterrupted run does.

Each killed run is a real subprocess that sends itself SIGKILL at a chosen point (a wrapper around one
function of the trainer, named by ``KILL_AT=<point>@<n>``), so the kill lands exactly there every time:

* ``evaluate@n``: as the n-th evaluation of the process starts (the weights were checkpointed just before);
* ``train_step@n``: as the n-th optimizer step of the process starts (mid-training);
* ``record@n``: right after the n-th epoch record reached metrics.jsonl, before its checkpoint;
* ``best@n``: during the n-th write of best.pth (its temporary file is complete, the rename has not happened).

The tiny schedule: 16 images, batch 4 (4 steps an epoch), 10 steps, an evaluation at every epoch end
(iterations 4, 8) and at the end (10), an iteration record every 3 steps.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.conftest import REPO

HOOK = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {repo!r})
    point, n = os.environ["KILL_AT"].split("@")
    n, calls = int(n), [0]

    def die_on_call(function, before=True, when=lambda *a, **k: True):
        def wrapper(*args, **kwargs):
            if not when(*args, **kwargs):
                return function(*args, **kwargs)
            calls[0] += 1
            if before and calls[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
            out = function(*args, **kwargs)
            if not before and calls[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        return wrapper

    import engine.trainer as trainer
    import engine.validation as validation
    import engine.metrics_log as metrics_log
    if point in ("evaluate", "train_step"):
        module = validation if point == "evaluate" else trainer
        setattr(module, point, die_on_call(getattr(module, point)))
    elif point == "record":  # after the append of an epoch record (no "type")
        metrics_log.MetricsLog.append = die_on_call(metrics_log.MetricsLog.append, before=False,
                                                    when=lambda self, record: "type" not in record)
    elif point == "best":  # the temporary of best.pth is written and synced; kill before its rename
        os.replace = die_on_call(os.replace, when=lambda src, dst: str(dst).endswith("best.pth"))
    else:
        raise SystemExit("unknown kill point " + point)
    import train
    train.main(sys.argv[1:])
""")


def _opts(root) -> list[str]:
    return ["model.backbone.width_mult=0.25", "model.encoder.channels=32", "model.encoder.mid_channels=8",
            f"data.root={root}", "data.synthetic.num_train=16", "data.synthetic.num_val=4",
            "data.synthetic.image_size=[64, 64]", "data.train_min_size=[64]", "data.train_max_size=64",
            "data.test_min_size=64", "data.test_max_size=64", "data.num_workers=0", "solver.batch_size=4",
            "solver.reference_batch_size=4", "solver.max_iter=10", "solver.steps=[7]", "solver.warmup_iters=2",
            "train.eval_period=1", "train.log_period=3"]


def _train(tmp, out, kill_at=None, resume=False):
    """Run train.py (through the kill hook when ``kill_at``); returns the exit status."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if kill_at:
        hook = tmp / "kill_hook.py"
        hook.write_text(HOOK.format(repo=str(REPO)))
        cmd, env["KILL_AT"] = [sys.executable, str(hook)], kill_at
    else:
        cmd = [sys.executable, "train.py"]
    cmd += ["--config", "config/small_cpu.yaml", "--output_dir", str(out), "--no_progress",
            "--opts", *_opts(tmp / "synth")] + (["--resume"] if resume else [])
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if kill_at:
        assert proc.returncode == -signal.SIGKILL, f"{kill_at}: not killed (rc {proc.returncode})\n{proc.stderr}"
    else:
        assert proc.returncode == 0, proc.stderr
    return proc


def _records(out) -> list[dict]:
    """metrics.jsonl without its timings."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in ("time_s", "epoch_time_s")} for line in lines]


def _weights(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _assert_same_run(done, reference):
    assert _records(done) == _records(reference)
    for name in ("last.pth", "best.pth"):
        a, b = _weights(reference / name), _weights(done / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}: {k}"
    assert not list(done.glob(".*.tmp")), "a temporary file of a killed write was left behind"


@pytest.mark.slow  # six train.py processes: about a minute of CPU
def test_killed_at_every_bad_moment_then_resumed_ends_as_an_uninterrupted_run(tmp_path):
    _train(tmp_path, tmp_path / "reference")
    records = _records(tmp_path / "reference")
    # epoch records at 4, 8 and the final one at 10, evaluated; iteration records every 3 steps
    assert [(r.get("type"), r["iteration"]) for r in records] == [
        ("iter", 3), (None, 4), ("iter", 6), (None, 8), ("iter", 9), (None, 10)]
    assert "AP50" in records[-1]
    assert (tmp_path / "reference" / "curves.png").is_file()  # train.py draws its own run at the end

    out = tmp_path / "killed"
    _train(tmp_path, out, kill_at="best@1")  # first best.pth (iteration 4): its epoch record is already written
    assert not (out / "best.pth").is_file() and list(out.glob(".best.pth.*.tmp"))
    _train(tmp_path, out, resume=True, kill_at="train_step@3")  # redoes the end of epoch 0, steps 5, 6, dies at 7
    assert torch.load(out / "last.pth", map_location="cpu", weights_only=True)["iteration"] == 4
    assert [r["iteration"] for r in _records(out)] == [3, 4, 6]  # iteration 6 is past the checkpoint
    _train(tmp_path, out, resume=True, kill_at="record@1")  # the record of iteration 8 is written, its checkpoint not
    assert [r["iteration"] for r in _records(out)] == [3, 4, 6, 8]
    _train(tmp_path, out, resume=True, kill_at="evaluate@2")  # evaluates 8 again, trains 9, 10, dies in the final one
    ckpt = torch.load(out / "last.pth", map_location="cpu", weights_only=True)
    assert ckpt["iteration"] == 10 and ckpt["recorded_iteration"] == 8  # trained to the end, not recorded
    assert [r["iteration"] for r in _records(out) if "type" not in r] == [4, 8]
    proc = _train(tmp_path, out, resume=True)  # evaluates, writes the final record and best.pth, stops
    assert "'iteration': 10" in proc.stdout
    _assert_same_run(out, tmp_path / "reference")

    # a complete run resumed once more does nothing: the same final record, no new line, same weights
    from config import load_config
    from engine.trainer import RunOptions, fit

    cfg = load_config(REPO / "config/small_cpu.yaml", _opts(tmp_path / "synth"))
    again = fit(cfg, RunOptions(out, device=torch.device("cpu"), resume="auto", progress=False))
    assert {k: v for k, v in again.items() if k not in ("time_s", "epoch_time_s")} == _records(out)[-1]
    _assert_same_run(out, tmp_path / "reference")
