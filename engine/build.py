"""What a training run is made of, built from its config: the data and loaders, the model, the solver."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from config.loader import resolve_num_classes
from data.build import build_dataset, build_test_loader, build_train_loader
from engine.optim import Schedule, build_optimizer, lr_factor
from models import build_model
from models.build import sync_batchnorm_parts
from models.compile import compile_model
from models.finetune import init_from_checkpoint
from models.layers import convert_sync_batchnorm
from models.pretrained import load_pretrained
from utils.errors import UserError


def batch_per_process(batch_size: int, processes: int, accumulate: int) -> int:
    """Images per process and micro-batch: the global batch split over the processes and accumulation steps."""
    if batch_size % (processes * accumulate):
        fits = [n for n in range(1, batch_size + 1) if batch_size % n == 0]
        raise UserError(f"solver.batch_size={batch_size} does not split over {processes} process(es) x accumulate "
                        f"{accumulate} = {processes * accumulate}: processes x accumulate must divide it (one of "
                        f"{', '.join(map(str, fits))})")
    return batch_size // processes // accumulate


@dataclass
class TrainingData:
    train_set: Any
    val_set: Any
    loader: torch.utils.data.DataLoader
    sampler: Any  # data.sampler's resumable sampler: set_epoch(epoch, start=images already consumed)
    val_loader: torch.utils.data.DataLoader
    batch_per_process: int
    images_per_step: int  # per process: batch_per_process x accumulate
    steps_per_epoch: int


def build_training_data(cfg, *, rank: int, world_size: int, accumulate: int):
    """The datasets and loaders; returns (``cfg`` with ``model.num_classes`` resolved: the run's config, the data).
    ``data.cache_images`` keeps the decoded images in memory (the config allows it with no loader workers only)."""
    per_process = batch_per_process(cfg.solver.batch_size, world_size, accumulate)
    train_set = build_dataset(cfg, cfg.data.train_split, is_train=True)
    cfg = resolve_num_classes(cfg, train_set.class_names)
    val_set = build_dataset(cfg, cfg.data.val_split, is_train=False)
    loader, sampler = build_train_loader(cfg, train_set, per_process, rank, world_size, accumulate=accumulate)
    val_loader = build_test_loader(val_set, cfg.data.test_batch_size, cfg.data.num_workers, rank, world_size)
    if cfg.data.cache_images:
        train_set.keep_images_in_memory()
        val_set.keep_images_in_memory()
    steps_per_epoch = len(sampler) // (per_process * accumulate)
    if steps_per_epoch == 0:
        raise UserError(f"{cfg.data.dataset} split {cfg.data.train_split!r} has {len(train_set)} training images, "
                        f"fewer than one step of {per_process * accumulate} per process")
    return cfg, TrainingData(train_set, val_set, loader, sampler, val_loader, per_process, per_process * accumulate,
                             steps_per_epoch)


def build_training_model(cfg, device: torch.device, *, world_size: int, fresh: bool, class_names) -> nn.Module:
    """The detector on ``device`` from its start, when ``fresh`` (a trained detector ``train.init_from``: its tensors
    that fit, its classifier rows by the names of ``class_names``; else the ImageNet backbone weights; a resumed
    run's checkpoint holds the weights), with SyncBatchNorm where configured under DDP and compiled parts with
    ``solver.compile``."""
    model = build_model(cfg)
    if fresh and cfg.train.init_from:
        init_from_checkpoint(model, cfg.train.init_from, class_names, model_cfg=cfg.model)
    elif fresh:
        load_pretrained(model, cfg.model.backbone)
    model = model.to(device)
    if cfg.solver.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if world_size > 1:  # parts configured with norm=syncbn become real SyncBatchNorm (one process: BN)
        model = convert_sync_batchnorm(model, sync_batchnorm_parts(cfg), device.type)
    if cfg.solver.compile:  # in place: parameter names, checkpoints and DDP unchanged
        compile_model(model)
    return model


def build_solver(model: nn.Module, cfg, schedule: Schedule, amp: str, device: torch.device):
    """(optimizer, learning-rate schedule, gradient scaler: fp16 only, on any device)."""
    optimizer = build_optimizer(model, cfg.solver, schedule.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(schedule, it))
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    return optimizer, scheduler, scaler
