"""engine/ema.py: the exponential moving average of the weights, its ramp, its buffers, and in a run: saved,
evaluated and resumed exactly."""
from __future__ import annotations

import math

import pytest
import torch

from config import load_config
from engine.ema import ModelEMA
from tests.conftest import REPO
from tests.studies.specs import TINY_DATA


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
