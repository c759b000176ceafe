"""The optimizer and the learning-rate schedule (warm-up, step or cosine decay, the 1x/2x/3x multiplier, linear
scaling)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

SCHEDULES = {"1x": 1, "2x": 2, "3x": 3}  # solver.schedule: multiplier of max_iter and steps
# solver.lr_decay: the factor after warm-up at iteration t of max_iter, from the schedule's steps and gamma
LR_DECAYS = {
    "step": lambda s, t: s.gamma ** sum(1 for step in s.steps if t >= step),  # official: x gamma at each step
    "cosine": lambda s, t: 0.5 * (1.0 + math.cos(math.pi * min(t, s.max_iter) / s.max_iter)),  # to 0 at max_iter
}


# ----------------------------------------------------------------------------- schedule
@dataclass(frozen=True)
class Schedule:
    lr: float
    max_iter: int
    steps: tuple[int, ...]
    warmup_iters: int
    warmup_factor: float
    gamma: float
    decay: str = "step"


def effective_schedule(solver) -> Schedule:
    """Apply the 1x/2x/3x multiplier and the linear scaling rule.

    With ``scale_lr`` the learning rate is ``base_lr * batch_size / reference_batch_size``
    and the iteration counts (max_iter, steps, warmup) scale by the inverse, so a
    run sees the same number of epochs at any batch size (detectron2's
    auto-scaling). Without it, the numbers are used as written.
    """
    mult = SCHEDULES[solver.schedule]
    ratio = solver.batch_size / solver.reference_batch_size if solver.scale_lr else 1.0
    lr = solver.base_lr * ratio
    it = lambda n: max(1, int(round(n / ratio)))  # noqa: E731
    return Schedule(lr, it(solver.max_iter * mult), tuple(it(s * mult) for s in solver.steps),
                    int(round(solver.warmup_iters / ratio)), solver.warmup_factor, solver.gamma, solver.lr_decay)


def lr_factor(schedule: Schedule, iteration: int) -> float:
    """Linear warm-up from ``warmup_factor``, times the decay: x``gamma`` at each step (detectron2
    WarmupMultiStepLR, the official one) or a cosine from 1 to 0 at ``max_iter`` (:data:`LR_DECAYS`)."""
    factor = LR_DECAYS[schedule.decay](schedule, iteration)
    if iteration < schedule.warmup_iters:
        alpha = iteration / schedule.warmup_iters
        factor *= schedule.warmup_factor * (1 - alpha) + alpha
    return factor


# ----------------------------------------------------------------------------- optimizer
def _sgd(param_groups: list[dict], lr: float, solver) -> torch.optim.Optimizer:
    return torch.optim.SGD(param_groups, lr=lr, momentum=solver.momentum, weight_decay=solver.weight_decay,
                           fused=solver.fused_optimizer or None)


def _adamw(param_groups: list[dict], lr: float, solver) -> torch.optim.Optimizer:
    return torch.optim.AdamW(param_groups, lr=lr, weight_decay=solver.weight_decay,
                             fused=solver.fused_optimizer or None)


# every solver.optimizer: name -> builder(param_groups, lr, solver)
OPTIMIZERS = {"sgd": _sgd, "adamw": _adamw}

_NORM_TYPES = (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)


def build_optimizer(model: nn.Module, solver, lr: float) -> torch.optim.Optimizer:
    """``solver.optimizer`` (one of :data:`OPTIMIZERS`) with the backbone at ``lr * backbone_lr_factor`` and norm
    layers at ``weight_decay_norm``."""
    groups: dict[tuple[bool, bool], list] = {}
    seen = set()
    for module_name, module in model.named_modules():
        for _, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            key = (module_name.startswith("backbone") or module_name.startswith("module.backbone"),
                   isinstance(module, _NORM_TYPES))
            groups.setdefault(key, []).append(p)
    param_groups = []
    for (is_backbone, is_norm), params in sorted(groups.items()):
        factor = solver.backbone_lr_factor if is_backbone else 1.0
        param_groups.append({"params": params, "lr": lr * factor, "initial_lr": lr * factor,
                             "weight_decay": solver.weight_decay_norm if is_norm else solver.weight_decay,
                             "name": f"{'backbone' if is_backbone else 'head'}{'_norm' if is_norm else ''}"})
    return OPTIMIZERS[solver.optimizer](param_groups, lr, solver)
