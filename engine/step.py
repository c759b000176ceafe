"""One training step, exact under gradient accumulation and DDP.

The step is written so that ``--accumulate N`` with micro-batches of ``b`` gives
the same update as one batch of ``N*b``, and ``W`` DDP processes give the same
update as one process with the whole batch, for both loss normalisations:

* every micro-batch back-propagates its *un-normalised* loss sum divided by a
  constant ``S`` (the images this process sees per step);
* after the last micro-batch the foreground counts of all micro-batches and all
  ranks are summed, and the gradients are multiplied by ``S / max(1, fg/W)``
  (``S / models.criterion.foreground_normalizer(fg, W)``, the divisor the
  criterion uses; ``batch`` normalisation, the official one) or left as they are
  (``per_image``: the per-image losses are already normalised, and ``S * W`` is
  the number of images).

A step is taken only when it is finite everywhere. A non-finite loss on any rank,
or non-finite gradients without a GradScaler, raise :class:`NonFiniteLossError` /
:class:`NonFiniteGradientError` on every rank *before* the optimizer step, so the
parameters, the optimizer and the scaler are untouched (``engine.nonfinite`` rolls
back what the forward pass changed). With a GradScaler (fp16), an overflow is the
scaler's to handle, wherever it happens: non-finite gradients, or an infinite (not
NaN) loss from an overflow in the forward pass, make the step ``skipped`` and lower
the scale; the trainer then advances neither the schedule, the EMA nor the
iteration count. A NaN loss is rolled back even with a scaler: a lower scale does
not cure it.
"""
from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from utils.distributed import all_reduce_sum, get_world_size
from models.criterion import foreground_normalizer
from utils.precision import amp_context


class NonFiniteLossError(FloatingPointError):
    """A loss was not finite on some process; ``parts`` holds this process's loss parts (empty where finite)."""

    def __init__(self, message: str, parts: Optional[dict] = None):
        super().__init__(message)
        self.parts = parts or {}


class NonFiniteGradientError(NonFiniteLossError):
    """The losses were finite but the gradients were not (no GradScaler to skip the step)."""


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, micro_batches, *, device: torch.device,
               normalization: str = "batch", scaler: Optional[torch.amp.GradScaler] = None, amp: str = "none",
               clip_grad_norm: float = 0.0) -> dict[str, float]:
    """One optimizer step over ``micro_batches`` (a list of (images, targets)); returns logged values.

    Exact gradient accumulation and DDP averaging, see the module docstring. A
    non-finite loss on any rank raises :class:`NonFiniteLossError` on every rank.
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    s = float(sum(len(images) for images, _ in micro_batches))  # images this process sees per step
    logs, local, bad_parts = _forward_backward(model, micro_batches, s, device=device, scaler=scaler, amp=amp)
    # every rank learns whether any rank saw a non-finite loss (no rank may skip alone: that hangs the others)
    stats = all_reduce_sum(local)  # [foreground count, processes with finite losses, processes without a NaN]
    world = get_world_size()
    if stats[1] < world and (scaler is None or stats[2] < world):
        raise NonFiniteLossError(f"non-finite loss on {int(world - stats[1])} of {world} process(es); "
                                 f"loss parts on this process: {bad_parts or 'finite here'}", bad_parts)
    if stats[1] < world:  # an infinite loss under a GradScaler: a forward overflow, skipped as the scaler would
        optimizer.zero_grad(set_to_none=True)
        scaler.update(scaler.get_scale() * scaler.get_backoff_factor())
        return {**logs, "loss": logs["loss_cls"] + logs["loss_box_reg"], "num_foreground": float(stats[0]),
                "skipped": True}
    factor = s / foreground_normalizer(float(stats[0]), world) if normalization == "batch" else None
    grad_norm, skipped = _normalise_clip_step(optimizer, factor=factor, clip_grad_norm=clip_grad_norm, scaler=scaler)
    logs["loss"] = logs["loss_cls"] + logs["loss_box_reg"]
    logs["num_foreground"] = float(stats[0])
    if clip_grad_norm > 0:
        logs["grad_norm"] = grad_norm
    logs["skipped"] = skipped
    return logs


def _forward_backward(model: nn.Module, micro_batches, s: float, *, device: torch.device,
                      scaler: Optional[torch.amp.GradScaler], amp: str) -> tuple[dict, torch.Tensor, dict]:
    """Back-propagate every micro-batch's un-normalised loss sum divided by ``s`` (the images of all of them).

    DDP synchronises the gradients on the last micro-batch only. Returns the loss parts (image-weighted means over
    the micro-batches), this process's ``[foreground count, 1 if every loss was finite else 0]`` and, when a loss
    was not finite, its parts.
    """
    logs = {"loss_cls": 0.0, "loss_box_reg": 0.0}
    fg = torch.zeros((), device=device)
    finite = torch.ones((), device=device)
    nan_free = torch.ones((), device=device)
    bad_parts: dict = {}
    for j, (images, targets) in enumerate(micro_batches):
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
        last = j == len(micro_batches) - 1
        sync = model.no_sync() if (isinstance(model, DDP) and not last) else contextlib.nullcontext()
        with sync:
            with amp_context(device, amp):
                out = model(images, targets, reduce_over_ranks=False)
            loss = out["loss_sum"] / s
            if not torch.isfinite(loss):
                finite.zero_()
                if torch.isnan(loss):
                    nan_free.zero_()
                bad_parts = {k: float(out[k].detach()) for k in ("loss_cls", "loss_box_reg")}
                bad_parts["micro_batch"] = j
            (scaler.scale(loss) if scaler is not None else loss).backward()
        fg += out["num_foreground"]
        weight = len(images) / s
        logs["loss_cls"] += float(out["loss_cls"].detach()) * weight
        logs["loss_box_reg"] += float(out["loss_box_reg"].detach()) * weight
    return logs, torch.stack([fg, finite, nan_free]), bad_parts


def _normalise_clip_step(optimizer: torch.optim.Optimizer, *, factor: Optional[float], clip_grad_norm: float,
                         scaler: Optional[torch.amp.GradScaler]) -> tuple[float, bool]:
    """Unscale (AMP), multiply the gradients by ``factor`` (None: leave them), clip, step.

    Returns (the gradient norm before clipping, whether the scaler skipped the step). Without a scaler,
    non-finite gradients raise :class:`NonFiniteGradientError` before the step (DDP's gradients are the same
    on every rank, so every rank raises).
    """
    if scaler is not None:
        scaler.unscale_(optimizer)
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if factor is not None:
        for p in params:
            p.grad.mul_(factor)
    if clip_grad_norm > 0:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip_grad_norm))
    elif scaler is None and params:  # the finiteness check (the scaler makes its own)
        grad_norm = float(torch.nn.utils.get_total_norm([p.grad for p in params]))
    else:
        grad_norm = 0.0
    if scaler is None:
        if not math.isfinite(grad_norm):
            optimizer.zero_grad(set_to_none=True)
            raise NonFiniteGradientError(f"non-finite gradients (norm {grad_norm}) with finite losses")
        optimizer.step()
        return grad_norm, False
    scale = scaler.get_scale()
    scaler.step(optimizer)  # skipped by the scaler when the unscaled gradients hold inf / NaN
    scaler.update()
    return grad_norm, scaler.get_scale() < scale
