"""The trainer: set-up, the epoch loop, evaluation, checkpoints and exact resume (see engine/step.py for the step)."""
from __future__ import annotations

import json
import logging
import random
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from config import config_to_dict
from engine.checkpoint import load_checkpoint, load_model_weights, remove_stale_temporaries, save_checkpoint
from engine.distributed import barrier, is_main_process
from engine.ema import ModelEMA
from engine.metrics_log import ITER, MetricsLog, epoch_records, final_record
from engine.optim import build_optimizer, effective_schedule, lr_factor
from engine.run_info import git_commit, rng_state, set_rng_state, write_run_info
from engine.step import NonFiniteLossError, train_step
from evaluation.evaluator import evaluate  # a module global: tests wrap it (as they wrap train_step)
from utils.errors import UserError

logger = logging.getLogger(__name__)


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


@dataclass
class Progress:
    """Where a run is: the counters a checkpoint stores (under these names) to continue it exactly."""

    iteration: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    best_ap: float = -1.0
    epoch_sums: dict = field(default_factory=dict)  # loss sums of the current epoch (its record's means)
    epoch_count: int = 0
    log_sums: dict = field(default_factory=dict)  # loss sums since the last iteration record
    log_count: int = 0
    recorded_iteration: int = 0  # iteration of the last epoch record: a run is complete when it is max_iter
    metrics_lines: Optional[int] = 0  # lines of metrics.jsonl at the checkpoint (None: not known)


def _resume_path(output_dir: Path, resume: Optional[str]) -> Optional[Path]:
    """The checkpoint a run continues from: ``resume`` ("auto": OUTPUT_DIR/last.pth when there is one), or None."""
    if not resume:
        return None
    if resume == "auto":
        path = output_dir / "last.pth"
        return path if path.is_file() else None
    return Path(resume)


def _check_start(cfg, resuming: bool) -> None:
    """A fresh run's start (ImageNet file or train.init_from) must exist before any data is read."""
    if resuming:  # the checkpoint holds the start
        return
    if not cfg.train.init_from:
        from models.pretrained import pretrained_path

        pretrained_path(cfg.model.backbone)
    elif not Path(cfg.train.init_from).is_file():
        raise UserError(f"train.init_from: checkpoint {cfg.train.init_from} not found (the detector this run "
                        f"starts from; e.g. the 9x model for the stage-2 recipe)")


def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


class Trainer:
    """One training run: :meth:`setup` (data, model, optimizer, resume), :meth:`train_one_epoch` and
    :meth:`end_of_epoch` (record, evaluate, checkpoint), driven by :meth:`run`; :meth:`state_dict` /
    :meth:`load_state_dict` are what ``last.pth`` and ``best.pth`` hold and what ``--resume`` restores.

    What a kill can leave, and what a resume from ``last.pth`` does with it:

    * ``metrics.jsonl`` records written after the checkpoint are cut (the checkpoint counts the lines), and
      written again when their work is redone; an epoch record is written *before* the checkpoint that
      closes its epoch, so no epoch is left without one;
    * before an evaluation the trained weights are checkpointed; a run killed during its last evaluation
      resumes at ``max_iter``, evaluates, writes its final record (and ``best.pth``), and stops;
    * checkpoints are written atomically (a killed write leaves the previous file; its temporary is removed).
    """

    def __init__(self, cfg, output_dir: Path, *, device: torch.device, accumulate: int = 1,
                 resume: Optional[str] = None, argv: Optional[list[str]] = None, rank: int = 0, world_size: int = 1,
                 max_iter: Optional[int] = None, num_workers: Optional[int] = None, progress: bool = True):
        self.output_dir, self.device, self.accumulate = Path(output_dir), device, accumulate
        self.rank, self.world_size = rank, world_size
        self.setup(cfg, resume=resume, argv=sys.argv[1:] if argv is None else argv, max_iter=max_iter,
                   num_workers=num_workers, progress=progress)

    # ------------------------------------------------------------------ set-up
    def setup(self, cfg, *, resume: Optional[str], argv: list[str], max_iter: Optional[int],
              num_workers: Optional[int], progress: bool) -> None:
        """Seed, data, model, optimizer, then the checkpoint to continue from (in this order: it fixes the
        random numbers of a run)."""
        self.schedule = effective_schedule(cfg.solver)
        self.max_iter = max_iter or self.schedule.max_iter
        if cfg.solver.batch_size % (self.world_size * self.accumulate) != 0:
            raise ValueError(f"solver.batch_size={cfg.solver.batch_size} is not divisible by processes x accumulate "
                             f"= {self.world_size} x {self.accumulate}")
        self.batch_per_process = cfg.solver.batch_size // self.world_size // self.accumulate
        resume_path = _resume_path(self.output_dir, resume)
        _check_start(cfg, resuming=resume_path is not None)
        _seed(cfg.train.seed)
        if is_main_process():
            write_run_info(self.output_dir, cfg, argv)  # as given: num_classes may say "auto"
            remove_stale_temporaries(self.output_dir)
        self._build_data(cfg, num_workers)
        model = self._build_model(resuming=resume_path is not None)
        self._build_solver(model)
        # train.ema: an average of the weights, evaluated and saved as "model"; restored on resume, else started here
        self.ema = ModelEMA(model, self.cfg.train.ema_decay, self.cfg.train.ema_ramp) if self.cfg.train.ema else None
        self.model = model
        self.metrics = MetricsLog(self.output_dir / "metrics.jsonl", enabled=is_main_process())
        self.p = Progress()
        if resume_path is not None:
            self.load_state_dict(load_checkpoint(resume_path))
            logger.info("resumed from %s at epoch %d, iteration %d", resume_path, self.p.epoch, self.p.iteration)
        self.metrics.cut(self.p.metrics_lines)
        self.p.metrics_lines = self.metrics.lines
        if self.world_size > 1:
            self.model = DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.writer = self._tensorboard()
        self.last_record: dict = {}
        self.t_start = time.perf_counter()
        from tqdm import tqdm

        self.bar = tqdm(total=self.max_iter, initial=min(self.p.iteration, self.max_iter),
                        disable=not (progress and is_main_process()), dynamic_ncols=True)

    def _build_data(self, cfg, num_workers: Optional[int]) -> None:
        """The datasets and loaders; ``self.cfg`` is ``cfg`` with ``model.num_classes`` resolved."""
        from data.build import build_dataset, build_test_loader, build_train_loader, resolve_num_classes

        self.train_set = build_dataset(cfg, cfg.data.train_split, is_train=True)
        self.cfg = cfg = resolve_num_classes(cfg, self.train_set.class_names)
        self.val_set = build_dataset(cfg, cfg.data.val_split, is_train=False)
        self.loader, self.sampler = build_train_loader(cfg, self.train_set, self.batch_per_process, self.rank,
                                                       self.world_size, num_workers)
        workers = cfg.data.num_workers if num_workers is None else num_workers
        self.val_loader = build_test_loader(self.val_set, cfg.data.test_batch_size, workers, self.rank,
                                            self.world_size)
        self.steps_per_epoch = len(self.sampler) // (self.batch_per_process * self.accumulate)
        if self.steps_per_epoch == 0:
            raise UserError(f"{cfg.data.dataset} split {cfg.data.train_split!r} has {len(self.train_set)} training "
                            f"images, fewer than one step of {self.batch_per_process * self.accumulate} per process")

    def _build_model(self, resuming: bool) -> nn.Module:
        """The detector from its start (a whole detector ``train.init_from`` or ImageNet backbone weights; a resumed
        run's checkpoint holds it), on the device, with SyncBatchNorm where configured under DDP."""
        from models import build_model

        cfg = self.cfg
        model = build_model(cfg)
        if resuming:
            pass
        elif cfg.train.init_from:
            load_model_weights(model, cfg.train.init_from)
        else:
            from models.pretrained import load_pretrained

            load_pretrained(model, cfg.model.backbone)
        model = model.to(self.device)
        if cfg.solver.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.world_size > 1 and cfg.solver.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if self.world_size > 1:  # parts configured with norm=syncbn become real SyncBatchNorm (one process: BN)
            from models.build import sync_batchnorm_parts
            from models.layers import convert_sync_batchnorm

            model = convert_sync_batchnorm(model, sync_batchnorm_parts(cfg), self.device.type)
        if cfg.solver.compile:  # in place: parameter names, checkpoints and DDP unchanged
            from models.compile import compile_model

            compile_model(model)
        return model

    def _build_solver(self, model: nn.Module) -> None:
        """Optimizer, learning-rate schedule and (fp16 on CUDA) the gradient scaler."""
        sched = self.schedule
        self.optimizer = build_optimizer(model, self.cfg.solver, sched.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda it: lr_factor(sched, it))
        use_scaler = self.device.type == "cuda" and self.cfg.solver.amp == "fp16"
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    def _tensorboard(self):
        if not is_main_process():
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter

            return SummaryWriter(str(self.output_dir / "tensorboard"), purge_step=self.p.iteration)
        except Exception as e:  # TensorBoard is a convenience; a run must not fail for it
            logger.warning("TensorBoard disabled: %s", e)
            return None

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """What a checkpoint holds: weights, optimizer, schedule, scaler, the :class:`Progress` counters (top-level
        keys), the RNG state, the resolved config, the git commit and the class names. With ``train.ema``
        ``"model"`` holds the EMA weights (what eval.py and test.py load), ``"model_train"`` the trained ones."""
        self.p.metrics_lines = self.metrics.lines
        state = {"model": _unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict() if self.scaler else None,
                 **asdict(self.p), "rng": rng_state(), "config": config_to_dict(self.cfg), "git_commit": git_commit(),
                 "class_names": list(self.train_set.class_names)}
        if self.ema is not None:
            state["model_train"], state["model"] = state["model"], self.ema.module.state_dict()
            state["ema_updates"] = self.ema.updates
        return state

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (a :meth:`state_dict`); checkpoints written before the metrics bookkeeping (no
        ``metrics_lines`` / ``recorded_iteration``) resume too."""
        _unwrap(self.model).load_state_dict(state.get("model_train", state["model"]))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:  # a checkpoint without an average starts it at its weights
            has_ema = "model_train" in state
            self.ema.load_state_dict({"module": state["model"], "updates": state["ema_updates"] if has_ema else 0})
        p = Progress(**{f.name: state[f.name] for f in fields(Progress) if f.name in state})
        p.epoch_sums, p.log_sums = dict(p.epoch_sums), dict(p.log_sums)
        if "metrics_lines" not in state:  # keep metrics.jsonl as it is
            p.metrics_lines = None
        if "recorded_iteration" not in state:
            records = epoch_records(self.metrics.records())
            p.recorded_iteration = int(records[-1]["iteration"]) if records else -1
        self.p = p
        set_rng_state(state["rng"])

    def checkpoint(self, name: str) -> None:
        if is_main_process():
            save_checkpoint(self.output_dir / name, self.state_dict())

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict:
        """Train to ``max_iter`` and finish the bookkeeping; returns the final record."""
        p = self.p
        while p.iteration < self.max_iter or p.recorded_iteration < p.iteration:
            t_epoch = time.perf_counter()
            steps = self.train_one_epoch() if p.iteration < self.max_iter else 0
            self.end_of_epoch(t_epoch, trained=steps > 0)
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if not self.last_record and is_main_process():  # nothing left to do: the run was complete
            self.last_record = final_record(self.metrics.records()) or {}
        return self.last_record

    def train_one_epoch(self) -> int:
        """Steps until the epoch or the schedule ends; returns how many were taken."""
        p = self.p
        if p.step_in_epoch >= self.steps_per_epoch:  # resumed at the end of an epoch
            return 0
        self.sampler.set_epoch(p.epoch, start=p.step_in_epoch * self.batch_per_process * self.accumulate)
        it = iter(self.loader)
        steps = 0
        while p.iteration < self.max_iter:
            batches = _micro_batches(it, self.accumulate)
            if batches is None:
                break
            self.step(batches)
            steps += 1
        return steps

    def step(self, batches) -> None:
        p, cfg = self.p, self.cfg
        try:
            logs = train_step(self.model, self.optimizer, batches, device=self.device,
                              normalization=cfg.model.loss.normalization, scaler=self.scaler, amp=cfg.solver.amp,
                              clip_grad_norm=cfg.solver.clip_grad_norm)
        except NonFiniteLossError:
            logger.error("stopping: non-finite loss at iteration %d (epoch %d)", p.iteration, p.epoch)
            raise
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        p.iteration += 1
        p.step_in_epoch += 1
        for sums in (p.epoch_sums, p.log_sums):
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
        p.epoch_count += 1
        p.log_count += 1
        lr = self.optimizer.param_groups[-1]["lr"]
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{logs['loss']:.3f}", cls=f"{logs['loss_cls']:.3f}",
                             box=f"{logs['loss_box_reg']:.3f}", lr=f"{lr:.2e}")
        if p.iteration % cfg.train.log_period == 0:
            self.log_iteration(lr)
        if cfg.train.checkpoint_period_iters and p.iteration % cfg.train.checkpoint_period_iters == 0:
            self.checkpoint("last.pth")

    def log_iteration(self, lr: float) -> None:
        """An iteration record (mean losses since the previous one) and the TensorBoard points."""
        p = self.p
        means = {k: v / max(1, p.log_count) for k, v in p.log_sums.items()}
        self.metrics.append({"type": ITER, "iteration": p.iteration, "epoch": p.epoch,
                             "steps_per_epoch": self.steps_per_epoch, "lr": lr, **means,
                             "time_s": round(time.perf_counter() - self.t_start, 1)})
        if self.writer is not None:
            for k, v in means.items():
                self.writer.add_scalar(f"train/{k}", v, p.iteration)
            self.writer.add_scalar("train/lr", lr, p.iteration)
        p.log_sums, p.log_count = {}, 0

    def end_of_epoch(self, t_epoch: float, trained: bool) -> None:
        """The epoch record (evaluated when due), best.pth, then the last.pth that closes the epoch."""
        p, cfg = self.p, self.cfg
        epoch_done = p.iteration < self.max_iter or p.step_in_epoch >= self.steps_per_epoch
        finished = p.iteration >= self.max_iter
        do_eval = finished or (cfg.train.eval_period > 0 and epoch_done and (p.epoch + 1) % cfg.train.eval_period == 0)
        if do_eval and trained:
            self.checkpoint("last.pth")  # the trained weights are safe before the (long) evaluation
        record = {"epoch": p.epoch, "iteration": p.iteration, "lr": self.optimizer.param_groups[-1]["lr"],
                  "time_s": round(time.perf_counter() - self.t_start, 1),
                  "epoch_time_s": round(time.perf_counter() - t_epoch, 1)}
        record.update({k: v / max(1, p.epoch_count) for k, v in p.epoch_sums.items()})
        ap = -1.0
        if do_eval:
            metrics = self.evaluate()
            record.update({k: v for k, v in metrics.items() if not k.startswith("AP_")})
            ap = metrics.get("AP", metrics.get("mAP", -1.0))
        self.metrics.append(record)
        p.recorded_iteration = p.iteration
        if epoch_done:
            p.epoch += 1
            p.step_in_epoch = 0
            p.epoch_sums, p.epoch_count = {}, 0
        if is_main_process() and (ap > p.best_ap or (finished and not (self.output_dir / "best.pth").is_file())):
            p.best_ap = max(ap, p.best_ap)
            self.checkpoint("best.pth")
        self.checkpoint("last.pth")
        if is_main_process():
            logger.info("epoch %d: %s", record["epoch"], json.dumps(record))
        self.last_record = record
        barrier()

    def evaluate(self) -> dict:
        from models.fuse import prepare_for_inference

        model = self.ema.module if self.ema is not None else _unwrap(self.model)
        path = self.output_dir / "eval" / f"metrics_iter{self.p.iteration}.json" if is_main_process() else None
        metrics = evaluate(prepare_for_inference(model), self.val_set, self.val_loader, self.device,
                           self.cfg.data.dataset, self.cfg.solver.amp, metrics_path=path)
        if self.writer is not None:
            for k in ("AP", "AP50", "AP75", "mAP"):
                if k in metrics:
                    self.writer.add_scalar(f"val/{k}", metrics[k], self.p.iteration)
        return metrics


def fit(cfg, output_dir: Path, *, device: torch.device, accumulate: int = 1, resume: Optional[str] = None,
        argv: Optional[list[str]] = None, rank: int = 0, world_size: int = 1, max_iter_override: Optional[int] = None,
        num_workers: Optional[int] = None, progress: bool = True) -> dict:
    """Train ``cfg`` into ``output_dir``; returns the final metrics record. See train.py for the flags."""
    return Trainer(cfg, output_dir, device=device, accumulate=accumulate, resume=resume, argv=argv, rank=rank,
                   world_size=world_size, max_iter=max_iter_override, num_workers=num_workers, progress=progress).run()
