"""engine/optim.py: every solver.optimizer, solver.lr_decay and solver.schedule name, from the config to the optimizer
and the learning rate, against values computed by hand."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from config import load_config
from config.listing import family_names
from engine.optim import build_optimizer, effective_schedule, lr_factor


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
