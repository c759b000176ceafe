"""engine/optim.py: every solver.optimizer, solver.lr_decay and solver.schedule name, from the config to the optimizer
and the learning rate, against values computed by hand; the official schedule, linear scaling, the parameter groups,
the fused kernel."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from config import load_config
from config.listing import family_names
from engine.optim import build_optimizer, effective_schedule, lr_factor
from models import build_model
from tests.conftest import REPO


def _solver(**opts):
    return load_config(None, {"solver.base_lr": 0.1, "solver.reference_batch_size": 64, **opts}).solver


@pytest.mark.parametrize("name", family_names()["solver.optimizer"])
def test_every_optimizer_name_builds_that_optimizer_from_the_config(name):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    opt = build_optimizer(model, _solver(**{"solver.optimizer": name, "solver.momentum": 0.8,
                                            "solver.weight_decay": 0.01, "solver.fused_optimizer": False}), 0.1)
    assert type(opt) is {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}[name]
    conv = next(g for g in opt.param_groups if g["name"] == "head")
    assert conv["lr"] == 0.1 and conv["weight_decay"] == 0.01
    if name == "sgd":
        assert conv["momentum"] == 0.8 and not conv["nesterov"]


@pytest.mark.parametrize("name", family_names()["solver.lr_decay"])
def test_every_lr_decay_name_gives_its_factor(name):
    """After a 100-step warm-up, over 1000 steps with steps [600, 800] and gamma 0.1: step decay 1, 0.1, 0.01;
    a cosine 0.5 * (1 + cos(pi * t / 1000))."""
    s = effective_schedule(_solver(**{"solver.lr_decay": name, "solver.max_iter": 1000, "solver.steps": [600, 800],
                                      "solver.warmup_iters": 100, "solver.batch_size": 64}))
    got = [lr_factor(s, t) for t in (100, 600, 800, 1000)]
    if name == "step":
        assert got == pytest.approx([1.0, 0.1, 0.01, 0.01])
    else:
        assert got == pytest.approx([0.5 * (1 + math.cos(math.pi * t / 1000)) for t in (100, 600, 800, 1000)])


@pytest.mark.parametrize("name", family_names()["solver.schedule"])
def test_every_schedule_name_multiplies_the_iterations(name):
    s = effective_schedule(_solver(**{"solver.schedule": name, "solver.batch_size": 64}))
    k = int(name[0])  # 1x, 2x, 3x
    assert (s.max_iter, s.steps, s.warmup_iters) == (22500 * k, (15000 * k, 20000 * k), 1500)


def test_schedule_warmup_steps_and_linear_scaling():
    cfg = load_config(REPO / "config/yolof_r50_c5_1x.yaml")
    s = effective_schedule(cfg.solver)
    assert (s.lr, s.max_iter, s.steps, s.warmup_iters) == (0.12, 22500, (15000, 20000), 1500)
    assert lr_factor(s, 0) == pytest.approx(0.00066667, rel=1e-5)  # the official WARMUP_FACTOR: 1/1500 rounded
    assert lr_factor(s, 750) == pytest.approx(0.5 * 0.00066667 + 0.5)
    assert (lr_factor(s, 1500) == 1.0 and lr_factor(s, 15000) == pytest.approx(0.1)
            and lr_factor(s, 20000) == pytest.approx(0.01))
    s8 = effective_schedule(load_config(REPO / "config/yolof_r50_c5_1x.yaml", {"solver.batch_size": 8}).solver)
    assert s8.lr == pytest.approx(0.015) and s8.max_iter == 180000 and s8.steps == (120000, 160000)
    s2x = effective_schedule(load_config(REPO / "config/yolof_r50_c5_1x.yaml", {"solver.schedule": "2x"}).solver)
    assert s2x.max_iter == 45000 and s2x.steps == (30000, 40000)


def test_optimizer_groups_backbone_factor_and_norm_decay():
    cfg = load_config(REPO / "config/yolof_r50_c5_1x.yaml")
    model = build_model(cfg)
    opt = build_optimizer(model, cfg.solver, 0.12)
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["backbone"]["lr"] == pytest.approx(0.12 * 0.334)
    assert by_name["head"]["lr"] == pytest.approx(0.12) and by_name["head"]["weight_decay"] == 1e-4
    assert by_name["head_norm"]["weight_decay"] == 0.0
    assert "backbone_norm" not in by_name  # FrozenBatchNorm2d has no parameters


def test_cosine_decay_by_hand():
    """solver.lr_decay=cosine: 0.5 * (1 + cos(pi * t / max_iter)) after the linear warm-up, 0 at max_iter."""
    cfg = load_config(REPO / "config/small_cpu.yaml", {"solver.lr_decay": "cosine", "solver.max_iter": 1000,
                                                         "solver.warmup_iters": 100, "solver.warmup_factor": 0.001})
    s = effective_schedule(cfg.solver)
    assert lr_factor(s, 0) == pytest.approx(0.001)  # warm-up start (cosine 1 at t = 0)
    assert lr_factor(s, 50) == pytest.approx((0.001 * 0.5 + 0.5) * 0.5 * (1 + math.cos(math.pi * 0.05)))
    assert lr_factor(s, 500) == pytest.approx(0.5) and lr_factor(s, 1000) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(s, 250) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert all(lr_factor(s, t) >= lr_factor(s, t + 1) for t in range(100, 1000))  # decreasing after warm-up


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_fused_optimizer_makes_the_same_updates(optimizer):
    """solver.fused_optimizer: torch's fused kernel, the same update as the per-parameter loop up to rounding."""
    params = {}
    for fused in (False, True):
        cfg = load_config(REPO / "config/small_cpu.yaml",
                          {"solver.optimizer": optimizer, "solver.fused_optimizer": fused})
        torch.manual_seed(0)
        model = build_model(cfg)
        start = copy.deepcopy(model.state_dict())
        opt = build_optimizer(model, cfg.solver, 1e-3)
        assert bool(opt.defaults["fused"]) == fused
        gen = torch.Generator().manual_seed(1)
        for _ in range(3):
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
        params[fused] = dict(model.named_parameters())
    for name, p in params[False].items():
        torch.testing.assert_close(params[True][name], p, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(params[True]["decoder.cls_score.weight"], start["decoder.cls_score.weight"])  # it moved
