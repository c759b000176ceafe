"""Training: optimizer, schedule, one exact (accumulated, distributed) step, and the epoch loop.

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

import json
import logging
import math
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from config import config_to_dict
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.distributed import all_reduce_sum, barrier, get_world_size, is_dist, is_main_process
from utils.ema import ModelEMA
from utils.evaluator import autocast_context, evaluate

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- schedule
@dataclass(frozen=True)
class Schedule:
    lr: float
    max_iter: int
    steps: tuple[int, ...]
    warmup_iters: int
    warmup_factor: float
    gamma: float


def effective_schedule(solver) -> Schedule:
    """Apply the 1x/2x/3x multiplier and the linear scaling rule.

    With ``scale_lr`` the learning rate is ``base_lr * batch_size / reference_batch_size``
    and the iteration counts (max_iter, steps, warmup) scale by the inverse, so a
    run sees the same number of epochs at any batch size (detectron2's
    auto-scaling). Without it, the numbers are used as written.
    """
    mult = {"1x": 1, "2x": 2, "3x": 3}[solver.schedule]
    ratio = solver.batch_size / solver.reference_batch_size if solver.scale_lr else 1.0
    lr = solver.base_lr * ratio
    it = lambda n: max(1, int(round(n / ratio)))  # noqa: E731
    return Schedule(lr, it(solver.max_iter * mult), tuple(it(s * mult) for s in solver.steps),
                    int(round(solver.warmup_iters / ratio)), solver.warmup_factor, solver.gamma)


def lr_factor(schedule: Schedule, iteration: int) -> float:
    """Linear warm-up from ``warmup_factor`` then x``gamma`` at each step (detectron2 WarmupMultiStepLR)."""
    factor = schedule.gamma ** sum(1 for s in schedule.steps if iteration >= s)
    if iteration < schedule.warmup_iters:
        alpha = iteration / schedule.warmup_iters
        factor *= schedule.warmup_factor * (1 - alpha) + alpha
    return factor


_NORM_TYPES = (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)


def build_optimizer(model: nn.Module, solver, lr: float) -> torch.optim.Optimizer:
    """SGD (or AdamW) with the backbone at ``lr * backbone_lr_factor`` and norm layers at ``weight_decay_norm``."""
    groups: dict[tuple[bool, bool], list] = {}
    seen = set()
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
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
    if getattr(solver, "optimizer", "sgd") == "adamw":
        return torch.optim.AdamW(param_groups, lr=lr, weight_decay=solver.weight_decay)
    return torch.optim.SGD(param_groups, lr=lr, momentum=solver.momentum, weight_decay=solver.weight_decay)


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
        sync = model.no_sync() if (isinstance(model, DDP) and not last) else _null()
        with sync:
            with autocast_context(device, amp):
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


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


# ----------------------------------------------------------------------------- run bookkeeping
def git_commit() -> str:
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else "unknown"
    except Exception:
        return "unknown"


def rng_state() -> dict:
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1].tolist(),
             "python": [version, list(internal), gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.seed(0)
    st = np.random.get_state()
    np.random.set_state((st[0], np.array(state["numpy"], dtype=np.uint32), *st[2:]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_run_info(output_dir: Path, cfg, argv: list[str]) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    (output_dir / "command.txt").write_text(" ".join([sys.executable] + argv) + "\n")
    (output_dir / "git_commit.txt").write_text(git_commit() + "\n")


def append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


# ----------------------------------------------------------------------------- the loop
def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DDP) else model


def _micro_batches(iterator, n: int):
    """The next ``n`` (images, targets) batches, or None at the end of the epoch."""
    out = []
    for _ in range(n):
        try:
            out.append(next(iterator))
        except StopIteration:
            return None
    return out


def fit(cfg, output_dir: Path, device: torch.device, accumulate: int = 1, resume: Optional[str] = None,
        argv: Optional[list[str]] = None, rank: int = 0, world_size: int = 1, max_iter_override: Optional[int] = None,
        num_workers: Optional[int] = None, progress: bool = True) -> dict:
    """Train ``cfg`` into ``output_dir``; returns the last metrics record. See train.py for the flags."""
    from data.build import build_dataset, build_test_loader, build_train_loader
    from models import build_model
    from models.fuse import prepare_for_inference

    output_dir = Path(output_dir)
    solver = cfg.solver
    sched = effective_schedule(solver)
    max_iter = max_iter_override or sched.max_iter
    per_step_local = solver.batch_size // world_size
    if solver.batch_size % (world_size * accumulate) != 0:
        raise ValueError(f"solver.batch_size={solver.batch_size} is not divisible by processes x accumulate = "
                         f"{world_size} x {accumulate}")
    batch_per_process = per_step_local // accumulate

    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)
    random.seed(cfg.train.seed)
    if is_main_process():
        write_run_info(output_dir, cfg, argv or sys.argv)
    train_set = build_dataset(cfg, cfg.data.train_split, is_train=True)
    val_set = build_dataset(cfg, cfg.data.val_split, is_train=False)
    loader, sampler = build_train_loader(cfg, train_set, batch_per_process, rank, world_size, num_workers)
    workers = cfg.data.num_workers if num_workers is None else num_workers
    val_loader = build_test_loader(val_set, max(1, batch_per_process), workers, rank, world_size)
    steps_per_epoch = max(1, len(sampler) // (batch_per_process * accumulate))

    model = build_model(cfg).to(device)
    if solver.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if world_size > 1 and solver.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = build_optimizer(model, solver, sched.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(sched, it))
    scaler = torch.amp.GradScaler("cuda") if (device.type == "cuda" and solver.amp == "fp16") else None

    iteration, epoch, step_in_epoch, best_ap = 0, 0, 0, -1.0
    sums, count = {}, 0  # running loss sums of the current epoch (kept in checkpoints for exact resume)
    ckpt = None
    if resume:
        path = output_dir / "last.pth" if resume == "auto" else Path(resume)
        if resume != "auto" or path.is_file():
            ckpt = load_checkpoint(path)
            model.load_state_dict(ckpt.get("model_train", ckpt["model"]))  # "model" holds the EMA weights with train.ema
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            if scaler is not None and ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            iteration, epoch, step_in_epoch = ckpt["iteration"], ckpt["epoch"], ckpt["step_in_epoch"]
            best_ap = ckpt.get("best_ap", -1.0)
            sums, count = dict(ckpt.get("epoch_sums", {})), int(ckpt.get("epoch_count", 0))
            set_rng_state(ckpt["rng"])
            logger.info("resumed from %s at epoch %d, iteration %d", path, epoch, iteration)
    # train.ema: an average of the weights, evaluated and saved as "model"; restored on resume, else started here
    ema = ModelEMA(model, cfg.train.ema_decay, cfg.train.ema_ramp) if cfg.train.ema else None
    if ema is not None and ckpt is not None and "model_train" in ckpt:
        ema.load_state_dict({"module": ckpt["model"], "updates": ckpt["ema_updates"]})
    ckpt = None
    ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if world_size > 1 else model

    writer = None
    if is_main_process():
        try:
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(str(output_dir / "tensorboard"), purge_step=iteration)
        except Exception as e:  # TensorBoard is a convenience; a run must not fail for it
            logger.warning("TensorBoard disabled: %s", e)

    def checkpoint(name: str) -> None:
        if not is_main_process():
            return
        state = {"model": _unwrap(ddp_model).state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                 "iteration": iteration, "epoch": epoch, "step_in_epoch": step_in_epoch, "best_ap": best_ap,
                 "epoch_sums": dict(sums), "epoch_count": count,
                 "rng": rng_state(), "config": config_to_dict(cfg), "git_commit": git_commit(),
                 "class_names": list(train_set.class_names)}
        if ema is not None:  # eval.py / test.py load "model" (the EMA weights); --resume loads "model_train"
            state["model_train"], state["model"] = state["model"], ema.module.state_dict()
            state["ema_updates"] = ema.updates
        save_checkpoint(output_dir / name, state)

    from tqdm import tqdm

    last_record: dict = {}
    t_start = time.perf_counter()
    bar = tqdm(total=max_iter, initial=iteration, disable=not (progress and is_main_process()), dynamic_ncols=True)
    while iteration < max_iter:
        sampler.set_epoch(epoch, start=step_in_epoch * batch_per_process * accumulate)
        it = iter(loader)
        t_epoch = time.perf_counter()
        while iteration < max_iter:
            batches = _micro_batches(it, accumulate)
            if batches is None:
                break
            try:
                logs = train_step(ddp_model, optimizer, batches, device, cfg.model.loss.normalization, scaler,
                                  solver.amp, solver.clip_grad_norm)
            except NonFiniteLossError:
                logger.error("stopping: non-finite loss at iteration %d (epoch %d)", iteration, epoch)
                raise
            scheduler.step()
            if ema is not None:
                ema.update(ddp_model)
            iteration += 1
            step_in_epoch += 1
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            lr = optimizer.param_groups[-1]["lr"]
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.3f}", cls=f"{logs['loss_cls']:.3f}", box=f"{logs['loss_box_reg']:.3f}", lr=f"{lr:.2e}")
            if writer is not None and iteration % cfg.train.log_period == 0:
                for k, v in logs.items():
                    writer.add_scalar(f"train/{k}", v, iteration)
                writer.add_scalar("train/lr", lr, iteration)
            if cfg.train.checkpoint_period_iters and iteration % cfg.train.checkpoint_period_iters == 0:
                checkpoint("last.pth")
        epoch_done = iteration < max_iter or step_in_epoch >= steps_per_epoch
        finished = iteration >= max_iter
        epoch_index = epoch
        if epoch_done:
            epoch += 1
            step_in_epoch = 0
        record = {"epoch": epoch_index, "iteration": iteration, "lr": optimizer.param_groups[-1]["lr"],
                  "time_s": round(time.perf_counter() - t_start, 1), "epoch_time_s": round(time.perf_counter() - t_epoch, 1)}
        record.update({k: v / max(1, count) for k, v in sums.items()})
        do_eval = finished or (cfg.train.eval_period > 0 and epoch_done and epoch % cfg.train.eval_period == 0)
        if do_eval:
            eval_model = ema.module if ema is not None else _unwrap(ddp_model)
            metrics = evaluate(prepare_for_inference(eval_model), val_set, val_loader, device, cfg.data.dataset, solver.amp,
                               metrics_path=output_dir / "eval" / f"metrics_iter{iteration}.json" if is_main_process() else None)
            record.update({k: v for k, v in metrics.items() if not k.startswith("AP_")})
            ap = metrics.get("AP", metrics.get("mAP", -1.0))
            if is_main_process() and ap > best_ap:
                best_ap = ap
                checkpoint("best.pth")
            if writer is not None:
                for k in ("AP", "AP50", "AP75", "mAP"):
                    if k in metrics:
                        writer.add_scalar(f"val/{k}", metrics[k], iteration)
        checkpoint("last.pth")
        if is_main_process():
            append_jsonl(output_dir / "metrics.jsonl", record)
            logger.info("epoch %d: %s", epoch_index, json.dumps(record))
        last_record = record
        if epoch_done:
            sums, count = {}, 0
        barrier()
    bar.close()
    if writer is not None:
        writer.close()
    return last_record
