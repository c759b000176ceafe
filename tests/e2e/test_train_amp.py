"""train.py with solver.amp=bf16 / fp16 on CPU (fp16 with a GradScaler, checkpointed)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from tests.conftest import REPO
from tests.helpers import SMALL


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_train_py_runs_20_steps_under_amp_on_cpu(tmp_path, amp):
    import train

    out = tmp_path / amp
    train.main(["--config", str(REPO / "config/small_cpu.yaml"), "--output_dir", str(out), "--no_progress",
                "--opts", f"data.root={tmp_path / 'data'}", f"solver.amp={amp}", *SMALL])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r.get("type") == "iter"]
    assert records[-1]["iteration"] == 20 and "AP50" in records[-1]
    assert all(math.isfinite(r["loss"]) for r in steps)
    state = torch.load(out / "last.pth", weights_only=True)
    assert (state["scaler"] is not None) == (amp == "fp16")  # a GradScaler("cpu") for fp16, checkpointed
    assert state["scheduler"]["last_epoch"] == state["iteration"] == 20
