"""train.sh end to end on CPU (gloo, `--device cpu`, NPROC processes): one interpreter from the preflight to the
workers, the preflight's one-line refusals before any worker, a user error met inside the workers printed once and
never replayed by torchrun's restarts (exit status 2), and a run moving from 8gpu to 1gpu-accum by itself."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from config.schema import SyntheticConfig
from data.synthetic.generate import generate_synthetic_coco
from tests.conftest import REPO

pytestmark = pytest.mark.slow

# 16 synthetic 64-px images, a narrow model; data.root comes from DATA
TINY_RUN = ["model.backbone.width_mult=0.25", "model.encoder.channels=32", "model.encoder.mid_channels=8",
            "data.synthetic.num_train=16", "data.synthetic.num_val=4", "data.synthetic.image_size=[64, 64]",
            "data.train_min_size=[64]", "data.train_max_size=64", "data.test_min_size=64", "data.test_max_size=64",
            "data.num_workers=0", "solver.batch_size=8", "solver.reference_batch_size=8", "solver.max_iter=6",
            "solver.steps=[5]", "solver.warmup_iters=2", "train.eval_period=0", "train.log_period=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("launch") / "data"
    generate_synthetic_coco(root, SyntheticConfig(num_train=16, num_val=4, image_size=(64, 64), seed=0,
                                                  num_objects=(1, 4), min_box=24.0, max_box=160.0))
    return root


def train_sh(mode: str, out: Path, data: Path, *args: str, nproc: int = 2, env=None):
    """``bash train.sh MODE tiny --device cpu --no_progress ARGS`` with the small config and these folders."""
    environ = {**os.environ, "OMP_NUM_THREADS": "1", "CONFIG": "config/small_cpu.yaml", "DATA": str(data),
               "OUT": str(out), "NPROC": str(nproc), "MAX_RESTARTS": "2", **(env or {})}
    environ.pop("RANK", None)
    cmd = ["bash", str(REPO / "train.sh"), mode, "tiny", "--device", "cpu", "--no_progress", *args]
    return subprocess.run(cmd, env=environ, cwd=REPO, capture_output=True, text=True, timeout=600)


def _errors(p) -> list[str]:
    return [line for line in (p.stdout + p.stderr).splitlines() if line.startswith("error: ")]


def test_a_config_mistake_ends_in_the_preflight_in_one_line(tmp_path, data):
    out = tmp_path / "run"
    p = train_sh("8gpu", out, data, "--opts", *TINY_RUN, "model.matcher.uniform.topk=abc")
    assert p.returncode == 2, p.stderr[-3000:]
    lines = [line for line in (p.stdout + p.stderr).splitlines() if line.strip()]
    assert lines == ["error: config key 'model.matcher.uniform.topk': expected an integer, got 'abc'"], lines
    assert not out.exists()  # no worker started


def test_a_folder_holding_another_run_is_refused_before_any_worker(tmp_path, data):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("solver: {base_lr: 5.0}\n")
    (out / "metrics.jsonl").write_text('{"epoch": 0, "iteration": 3}\n')
    p = train_sh("8gpu", out, data, "--opts", *TINY_RUN)
    assert p.returncode == 2
    assert _errors(p) == [f"error: {out} already holds another config (keys solver.base_lr): continue it with "
                          f"--resume, choose another --output_dir, or pass --overwrite to discard it"]
    assert sorted(f.name for f in out.iterdir()) == ["config.yaml", "metrics.jsonl"]  # untouched, no log.txt


def test_a_user_error_in_the_workers_is_printed_once_not_replayed_and_exits_2(tmp_path, data):
    """A learning rate that makes the second step non-finite, with train.nan_retries=0: the run stops with
    NonFiniteRunError in both workers; torchrun (--max-restarts 2) restarts them twice, and each restart ends at
    once on the stop record instead of training again."""
    out = tmp_path / "run"
    p = train_sh("8gpu", out, data, "--opts", *TINY_RUN, "solver.base_lr=1.0e+30", "train.nan_retries=0")
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-3000:]
    errors = _errors(p)
    assert len(errors) == 3, errors
    assert errors[0].startswith("error: stopping at iteration") and "train.nan_retries=0" in errors[0]
    assert all(e.startswith(f"error: elastic restart {k} does not continue this run") for k, e in
               zip((1, 2), errors[1:]))
    record = json.loads((out / "stopped.json").read_text())
    assert record["error"] == errors[0].removeprefix("error: ")
    log = (out / "log.txt").read_text()
    assert log.count("new run in") == 1 and "continuing it from" not in log  # no attempt trained again


def test_a_run_started_on_8gpu_continues_on_1gpu_accum_by_itself(tmp_path, data):
    """8gpu and 1gpu-accum write the same run config: the second command continues the first run from its
    last.pth (no --resume), with the global batch of 8 as 1 process x 8 accumulation steps."""
    out = tmp_path / "run"
    p = train_sh("8gpu", out, data, "--max_iter", "2", "--opts", *TINY_RUN)
    assert p.returncode == 0, p.stderr[-3000:]
    first = (out / "config.yaml").read_text()
    assert torch.load(out / "last.pth", weights_only=True)["iteration"] == 2
    p = train_sh("1gpu-accum", out, data, "--opts", *TINY_RUN, nproc=1)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "continuing it from" in p.stdout + p.stderr
    assert (out / "config.yaml").read_text() == first
    state = torch.load(out / "last.pth", weights_only=True)
    assert state["iteration"] == 6 and (state["world_size"], state["accumulate"]) == (1, 8)
    assert "checkpointed with 2 process(es) x accumulate 1 and continues with 1 x 8" in (out / "log.txt").read_text()


def test_on_a_machine_without_gpus_the_8gpu_mode_stops_in_one_line_naming_why(tmp_path):
    p = subprocess.run(["bash", str(REPO / "train.sh"), "8gpu", "r50_c5"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": "",
                                                    "OUT": str(tmp_path / "r")})
    assert p.returncode == 2
    lines = [line for line in (p.stdout + p.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "8gpu needs 8 GPUs, found 0" in lines[0] and "CUDA" in lines[0], lines
    assert not (tmp_path / "r").exists()
