"""Exponential moving average of model weights (not in official YOLOF; the ablation switch ``train.ema``).

After every optimizer step ``t = 1, 2, ...``::

    d_t = decay * (1 - exp(-t / ramp))          (ramp = 0: d_t = decay)
    ema = d_t * ema + (1 - d_t) * weights

for every floating-point parameter *and* buffer (BatchNorm running statistics
are averaged too); integer buffers (``num_batches_tracked``) are copied. The
warm-up ramp is YOLOv5's ``ModelEMA``: early on ``d_t`` is small, so the average
follows the fast-changing weights of the start of training instead of
remembering the random initialisation; with ``decay=0.9998, ramp=2000`` it reaches
0.99 of ``decay`` after ~9200 steps. The average lives on the model's device in
the model's dtype.

With ``train.ema`` on, :func:`engine.trainer.fit` evaluates the EMA weights, stores
them as ``"model"`` in ``last.pth`` / ``best.pth`` (what eval.py and test.py
load) and the training weights as ``"model_train"`` (what ``--resume`` loads),
with ``"ema_updates"``.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float = 0.9998, ramp: float = 2000.0):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        model = getattr(model, "module", model)  # DDP
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.ramp, self.updates = float(decay), float(ramp), 0

    def current_decay(self) -> float:
        """``d_t`` for the current number of updates."""
        if self.ramp <= 0:
            return self.decay
        return self.decay * (1.0 - math.exp(-self.updates / self.ramp))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` (plain or DDP) into the average; call after ``optimizer.step()``."""
        model = getattr(model, "module", model)
        self.updates += 1
        d = self.current_decay()
        current = model.state_dict()
        for name, avg in self.module.state_dict().items():
            new = current[name].detach()
            if avg.dtype.is_floating_point:
                avg.mul_(d).add_(new.to(avg.dtype), alpha=1.0 - d)
            else:
                avg.copy_(new)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay, "ramp": self.ramp}

    def load_state_dict(self, state: dict) -> None:
        """Restore the average and the update count (``decay`` / ``ramp`` stay those of the config)."""
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
