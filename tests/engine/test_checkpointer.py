"""engine/checkpointer.py: a checkpoint continues a run exactly, on another machine and process layout, and only
with the global batch it was trained with."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from engine.run_info import set_rng_state
from engine.trainer import RunOptions, fit
from tests.helpers import CPU, small_cfg, synthetic_cfg
from utils.errors import UserError


def test_resume_continues_exactly(tmp_path):
    cfg = synthetic_cfg(tmp_path)
    device = CPU
    full = fit(cfg, RunOptions(tmp_path / "full", device=device, max_iter=5, progress=False))
    # stops mid-epoch, writes last.pth
    fit(cfg, RunOptions(tmp_path / "part", device=device, max_iter=2, progress=False))
    resumed = fit(cfg, RunOptions(tmp_path / "part", device=device, resume="auto", max_iter=5, progress=False))
    a = torch.load(tmp_path / "full" / "last.pth", weights_only=True)
    b = torch.load(tmp_path / "part" / "last.pth", weights_only=True)
    assert a["iteration"] == b["iteration"] == 5
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=0, atol=0, msg=k)
    assert resumed["loss"] == pytest.approx(full["loss"], rel=1e-5)
    # what a run writes
    for name in ("config.yaml", "command.txt", "git_commit.txt", "metrics.jsonl", "last.pth", "best.pth"):
        assert (tmp_path / "full" / name).is_file(), name
    record = json.loads((tmp_path / "full" / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("epoch", "loss_cls", "loss_box_reg", "lr", "AP", "AP50"):
        assert key in record
    assert any((tmp_path / "full" / "tensorboard").iterdir())


def test_a_checkpoint_with_8_cuda_rng_states_resumes_on_cpu(tmp_path, caplog):
    cfg = small_cfg(tmp_path, "solver.max_iter=4", "solver.steps=[3]")
    fit(cfg, RunOptions(tmp_path / "run", device=CPU, progress=False, max_iter=2))
    path = tmp_path / "run" / "last.pth"
    state = torch.load(path, weights_only=True)
    state["rng"]["cuda"] = [torch.randint(0, 255, (16,), dtype=torch.uint8) for _ in range(8)]  # 8 GPUs' states
    torch.save(state, path)
    with caplog.at_level(logging.INFO):
        record = fit(cfg, RunOptions(tmp_path / "run", device=CPU, progress=False, resume="auto"))
    assert record["iteration"] == 4
    assert "holds 8 CUDA RNG state(s), this process sees 0 GPU(s): restored 0" in caplog.text
    set_rng_state({**state["rng"], "cuda": []})  # no CUDA states at all: fine too


def test_another_global_batch_is_refused_in_one_line_naming_both_values_and_the_fixes(tmp_path):
    """A batch-4 checkpoint resumed with batch 2 would keep batch 4's learning rate (LambdaLR's base_lrs come from
    the checkpoint) and restart the sampler at the wrong image: refused before anything changes."""
    out = tmp_path / "run"
    fit(synthetic_cfg(tmp_path), RunOptions(out, device=CPU, max_iter=2, progress=False))
    before = (out / "last.pth").read_bytes()
    with pytest.raises(UserError) as e:
        fit(synthetic_cfg(tmp_path, **{"solver.batch_size": 2}), RunOptions(out, device=CPU, resume="auto",
                                                                             progress=False))
    message = str(e.value)
    assert "solver.batch_size=4" in message and "asks for 2" in message
    assert "--opts solver.batch_size=4" in message and "--accumulate" in message and "train.init_from=" in message
    assert (out / "last.pth").read_bytes() == before
