"""One training step, exact under gradient accumulation and DDP.

The step is written so that ``--accumulate N`` with micro-batches of ``b`` gives
the same update as one batch of ``N*b``, and ``W`` DDP processes give the same
update as one process with the whole batch, for both loss normalisations:

* every micro-batch back-propagates its *un-normalised* loss sum divided by a
  constant ``S`` (the images this process sees per step);
* after the last micro-batch the foreground counts of all micro-batches and all
  ranks are summed, and the gradients are multiplied by ``S / max(1, fg/W)``
  (``batch`` normalisation, the official one) or left as they are
  (``per_image``: the per-image losses are already normalised, and ``S * W`` is
  the number of images).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from engine.distributed import all_reduce_sum, get_world_size
from utils.precision import amp_context

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- one step
class NonFiniteLossError(FloatingPointError):
    pass


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, micro_batches, device: torch.device,
               normalization: str = "batch", scaler: Optional[torch.amp.GradScaler] = None, amp: str = "none",
               clip_grad_norm: float = 0.0, channels_last: bool = False) -> dict[str, float]:
    """One optimizer step over ``micro_batches`` (a list of (images, targets)); returns logged values.

    Exact gradient accumulation and DDP averaging, see the module docstring. A
    non-finite loss on any rank raises :class:`NonFiniteLossError` on every rank.
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    s = float(sum(len(images) for images, _ in micro_batches))  # images this process sees per step
    logs = {"loss_cls": 0.0, "loss_box_reg": 0.0}
    fg = torch.zeros((), device=device)
    finite = torch.ones((), device=device)
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
                bad_parts = {k: float(out[k].detach()) for k in ("loss_cls", "loss_box_reg")}
                bad_parts["micro_batch"] = j
            (scaler.scale(loss) if scaler is not None else loss).backward()
        fg += out["num_foreground"]
        weight = len(images) / s
        logs["loss_cls"] += float(out["loss_cls"].detach()) * weight
        logs["loss_box_reg"] += float(out["loss_box_reg"].detach()) * weight
    # every rank learns whether any rank saw a non-finite loss (no rank may skip alone: that hangs the others)
    stats = all_reduce_sum(torch.stack([fg, finite, torch.tensor(float(len(micro_batches)), device=device)]))
    world = get_world_size()
    if stats[1] < world:
        raise NonFiniteLossError(f"non-finite loss on {int(world - stats[1])} of {world} process(es); "
                                 f"loss parts on this process: {bad_parts or 'finite here'}")
    if scaler is not None:
        scaler.unscale_(optimizer)
    if normalization == "batch":
        factor = s / max(1.0, float(stats[0]) / world)
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.mul_(factor)
    grad_norm = None
    if clip_grad_norm > 0:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(
            [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None], clip_grad_norm))
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    logs["loss"] = logs["loss_cls"] + logs["loss_box_reg"]
    logs["num_foreground"] = float(stats[0])
    if grad_norm is not None:
        logs["grad_norm"] = grad_norm
    return logs


