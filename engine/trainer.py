"""The trainer: set-up, the epoch loop, evaluation, checkpoints, exact resume and recovery from a non-finite step
(see engine/step.py for the step itself and engine/run_folder.py for when a run starts, continues or stops).

The loop, as :meth:`Trainer.run` drives it::
    while not finished:
        train_one_epoch()   # steps until the epoch or the schedule ends
        end_of_epoch()      # record (+ evaluation when due), best.pth, last.pth
"""
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
from tqdm import tqdm

from config import config_to_dict
from config.loader import resolve_num_classes
from data.build import DATASETS, build_dataset, build_test_loader, build_train_loader
from engine.ema import ModelEMA
from engine.metrics_log import ITER, MetricsLog, epoch_records, final_record
from engine.optim import build_optimizer, effective_schedule, lr_factor
from engine.run_folder import StartPlan, discard_run, plan_start
from engine.run_info import git_commit, rng_state, set_rng_state, write_run_info
from engine.step import NonFiniteLossError, train_step
from evaluation.evaluator import evaluate  # a module global: tests wrap it (as they wrap train_step)
from models import build_model
from models.build import sync_batchnorm_parts
from models.compile import compile_model
from models.finetune import init_from_checkpoint
from models.fuse import prepare_for_inference
from models.layers import convert_sync_batchnorm
from models.pretrained import load_pretrained, pretrained_path
from utils.checkpoint import load_checkpoint, remove_stale_temporaries, save_checkpoint
from utils.distributed import (all_gather_object, barrier, broadcast_bytes, broadcast_object, broadcast_tensors,
                               get_rank, is_dist, is_main_process)
from utils.errors import UserError
from utils.precision import resolve_amp

logger = logging.getLogger(__name__)


class NonFiniteRunError(UserError, FloatingPointError):
    """Training stopped: more non-finite steps than ``train.nan_retries`` rollbacks allow."""


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
class TrainState:
    """Where a run is: the counters a checkpoint stores (as top-level keys, under these names) to continue it.

    ``iteration`` counts optimizer steps taken; ``step_in_epoch`` counts the global batches the epoch has
    consumed (the sampler's position), including those of steps that were not taken (a GradScaler skip, a
    rolled-back non-finite step).
    """

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
    skipped_steps: int = 0  # steps the GradScaler skipped (inf / NaN gradients under fp16)
    nan_rollbacks: int = 0  # non-finite steps rolled back (at most train.nan_retries)

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_checkpoint(cls, state: dict) -> "TrainState":
        """The counters of a checkpoint; one written before a counter existed gets its default (``None`` for
        ``metrics_lines``: keep metrics.jsonl as it is)."""
        s = cls(**{f.name: state[f.name] for f in fields(cls) if f.name in state})
        s.epoch_sums, s.log_sums = dict(s.epoch_sums), dict(s.log_sums)
        if "metrics_lines" not in state:
            s.metrics_lines = None
        return s

    def add_losses(self, logs: dict) -> None:
        for sums in (self.epoch_sums, self.log_sums):
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
        self.epoch_count += 1
        self.log_count += 1

    def take_log_means(self) -> dict:
        """The mean losses since the last iteration record (and start the next)."""
        means = {k: v / max(1, self.log_count) for k, v in self.log_sums.items()}
        self.log_sums, self.log_count = {}, 0
        return means

    def epoch_means(self) -> dict:
        return {k: v / max(1, self.epoch_count) for k, v in self.epoch_sums.items()}

    def next_epoch(self) -> None:
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_sums, self.epoch_count = {}, 0


def sync_model(model: nn.Module, ema: Optional[ModelEMA] = None) -> None:
    """One model per run: rank 0's buffers (BatchNorm running statistics) and EMA on every rank, before each
    evaluation and checkpoint. DDP keeps the parameters equal, but each rank's buffers drift with its own last
    batches, so ranks would evaluate different models and the checkpoint (rank 0's) would not be what was scored."""
    broadcast_tensors(_unwrap(model).buffers())
    if ema is not None:
        broadcast_tensors(ema.module.state_dict().values())


def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _check_start(cfg) -> None:
    """A fresh run's start (ImageNet file or train.init_from) must exist before any data is read."""
    if not cfg.train.init_from:
        pretrained_path(cfg.model.backbone)
    elif not Path(cfg.train.init_from).is_file():
        raise UserError(f"train.init_from: checkpoint {cfg.train.init_from} not found (the detector this run "
                        f"starts from; e.g. the 9x model for the stage-2 recipe)")


def _on_rank0(work, *, share: bool = True):
    """``work()`` on rank 0; its result on every rank (``share``) or on rank 0 only. A :class:`UserError` it raises
    is raised on every rank (printed once, by rank 0: see utils.script.run_script)."""
    result, error = None, None
    if is_main_process():
        try:
            result = work()
        except UserError as e:
            error = str(e)
    error = broadcast_object(error)
    if error is not None:
        raise UserError(error)
    return broadcast_object(result) if share else result


def _read_checkpoint_everywhere(path: str) -> dict:
    """The checkpoint at ``path`` as rank 0 reads it, on every rank: the other ranks receive its bytes (their
    nodes may not share rank 0's disk) and read them as a file (``weights_only``). A rank that cannot read them
    stops the run on every rank, in one line naming the rank and the path."""
    if not is_dist():
        return load_checkpoint(path)
    loaded = _on_rank0(lambda: (load_checkpoint(path), Path(path).read_bytes()), share=False)
    data = broadcast_bytes(loaded[1] if loaded is not None else None)
    state, error = (loaded[0], None) if loaded is not None else (None, None)
    if state is None:
        try:
            state = load_checkpoint(path, data)
        except UserError as e:
            error = f"rank {get_rank()} could not read the checkpoint {path} that rank 0 sent: {e}"
    errors = [e for e in all_gather_object(error) if e]
    if errors:
        raise UserError(errors[0])
    return state


class Trainer:
    """One training run: :meth:`setup` (the run folder's decision, data, model, optimizer, resume),
    :meth:`train_one_epoch` and :meth:`end_of_epoch`, driven by :meth:`run`; :meth:`state_dict` /
    :meth:`load_state_dict` are what ``last.pth`` and ``best.pth`` hold and what a resume restores.

    What a kill can leave, and what a resume from ``last.pth`` does with it:
    * ``metrics.jsonl`` records written after the checkpoint are cut (the checkpoint counts the lines), and
      written again when their work is redone; an epoch record is written *before* the checkpoint that
      closes its epoch, so no epoch is left without one;
    * before an evaluation the trained weights are checkpointed; a run killed during its last evaluation
      resumes at ``max_iter``, evaluates, writes its final record (and ``best.pth``), and stops;
    * checkpoints are written atomically (a killed write leaves the previous file; its temporary is removed).

    A run checkpointed with W processes resumes with any W' that divides ``solver.batch_size`` (with
    ``--accumulate``): the global batch, the schedule position and the sampler's position in the epoch stay; the
    per-process split (and with it BatchNorm's batch statistics and the float summation order) changes, which
    the log says.

    A non-finite step (a loss on any rank, or gradients outside a GradScaler's skip) is rolled back, at most
    ``train.nan_retries`` times: see :meth:`roll_back`.
    """

    def __init__(self, cfg, output_dir: Path, *, device: torch.device, accumulate: int = 1,
                 resume: Optional[str] = None, overwrite: bool = False, argv: Optional[list[str]] = None,
                 rank: int = 0, world_size: int = 1, max_iter: Optional[int] = None,
                 num_workers: Optional[int] = None, progress: bool = True):
        self.output_dir, self.device, self.accumulate = Path(output_dir), device, accumulate
        self.rank, self.world_size = rank, world_size
        self.setup(cfg, resume=resume, overwrite=overwrite, argv=sys.argv[1:] if argv is None else argv,
                   max_iter=max_iter, num_workers=num_workers, progress=progress)

    # ------------------------------------------------------------------ set-up
    def setup(self, cfg, *, resume: Optional[str], overwrite: bool, argv: list[str], max_iter: Optional[int],
              num_workers: Optional[int], progress: bool) -> None:
        """The run folder's decision, seed, data, model, optimizer, then the checkpoint to continue from (in this
        order: it fixes the random numbers of a run)."""
        self.schedule = effective_schedule(cfg.solver)
        self.max_iter = max_iter or self.schedule.max_iter
        if cfg.solver.batch_size % (self.world_size * self.accumulate) != 0:
            raise ValueError(f"solver.batch_size={cfg.solver.batch_size} is not divisible by processes x accumulate "
                             f"= {self.world_size} x {self.accumulate}")
        self.batch_per_process = cfg.solver.batch_size // self.world_size // self.accumulate
        plan: StartPlan = _on_rank0(lambda: plan_start(self.output_dir, config_to_dict(cfg), resume=resume,
                                                              overwrite=overwrite))
        logger.info("%s", plan.reason)
        if plan.resume_from is None:
            _check_start(cfg)
        _seed(cfg.train.seed)
        if is_main_process():
            if plan.discard:
                logger.info("--overwrite: removed %s", ", ".join(discard_run(self.output_dir)) or "nothing")
            write_run_info(self.output_dir, cfg, argv)  # as given: num_classes may say "auto"
            remove_stale_temporaries(self.output_dir)
        self.cfg = self._build_data(cfg, num_workers)
        self.amp = resolve_amp(self.cfg.solver.amp, self.device)
        model = self._build_model(resuming=plan.resume_from is not None)
        self._build_solver(model)
        # train.ema: an average of the weights, evaluated and saved as "model"; restored on resume, else started here
        self.ema = ModelEMA(model, self.cfg.train.ema_decay, self.cfg.train.ema_ramp) if self.cfg.train.ema else None
        self.model = model
        self.metrics = MetricsLog(self.output_dir / "metrics.jsonl", enabled=is_main_process())
        self.state = TrainState()
        if plan.resume_from is not None:
            self.load_state_dict(_read_checkpoint_everywhere(plan.resume_from))
            logger.info("resumed from %s at epoch %d, iteration %d", plan.resume_from, self.state.epoch,
                        self.state.iteration)
        self.metrics.cut(self.state.metrics_lines)
        self.state.metrics_lines = self.metrics.lines
        if self.world_size > 1:
            self.model = DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.writer = self._tensorboard()
        self.last_record: dict = {}
        self.t_start = time.perf_counter()
        self.bar = tqdm(total=self.max_iter, initial=min(self.state.iteration, self.max_iter),
                        disable=not (progress and is_main_process()), dynamic_ncols=True)

    def _build_data(self, cfg, num_workers: Optional[int]):
        """The datasets and loaders; returns ``cfg`` with ``model.num_classes`` resolved (the run's config)."""
        self.train_set = build_dataset(cfg, cfg.data.train_split, is_train=True)
        cfg = resolve_num_classes(cfg, self.train_set.class_names)
        self.val_set = build_dataset(cfg, cfg.data.val_split, is_train=False)
        self.loader, self.sampler = build_train_loader(cfg, self.train_set, self.batch_per_process, self.rank,
                                                       self.world_size, num_workers, accumulate=self.accumulate)
        workers = cfg.data.num_workers if num_workers is None else num_workers
        self.val_loader = build_test_loader(self.val_set, cfg.data.test_batch_size, workers, self.rank,
                                            self.world_size)
        if cfg.data.cache_images:
            if workers == 0:
                self.train_set.keep_images_in_memory()
                self.val_set.keep_images_in_memory()
            else:
                logger.info("data.cache_images skipped: it needs data.num_workers 0 (loader workers restart every "
                            "epoch and lose their cache), and this run has %d", workers)
        self.steps_per_epoch = len(self.sampler) // (self.batch_per_process * self.accumulate)
        if self.steps_per_epoch == 0:
            raise UserError(f"{cfg.data.dataset} split {cfg.data.train_split!r} has {len(self.train_set)} training "
                            f"images, fewer than one step of {self.batch_per_process * self.accumulate} per process")
        return cfg

    def _build_model(self, resuming: bool) -> nn.Module:
        """The detector from its start (a whole detector ``train.init_from`` or ImageNet backbone weights; a resumed
        run's checkpoint holds it), on the device, with SyncBatchNorm where configured under DDP."""
        cfg = self.cfg
        model = build_model(cfg)
        if resuming:
            pass
        elif cfg.train.init_from:  # a trained detector: models/finetune.py (classes matched by name)
            init_from_checkpoint(model, cfg.train.init_from, self.train_set.class_names, model_cfg=cfg.model)
        else:
            load_pretrained(model, cfg.model.backbone)
        model = model.to(self.device)
        if cfg.solver.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.world_size > 1 and cfg.solver.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if self.world_size > 1:  # parts configured with norm=syncbn become real SyncBatchNorm (one process: BN)
            model = convert_sync_batchnorm(model, sync_batchnorm_parts(cfg), self.device.type)
        if cfg.solver.compile:  # in place: parameter names, checkpoints and DDP unchanged

            compile_model(model)
        return model

    def _build_solver(self, model: nn.Module) -> None:
        """Optimizer, learning-rate schedule and (fp16, on any device) the gradient scaler."""
        sched = self.schedule
        self.optimizer = build_optimizer(model, self.cfg.solver, sched.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda it: lr_factor(sched, it))
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp == "fp16" else None

    def _tensorboard(self):
        if not is_main_process():
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional: heavy

            return SummaryWriter(str(self.output_dir / "tensorboard"), purge_step=self.state.iteration)
        except Exception as e:  # TensorBoard is a convenience; a run must not fail for it
            logger.warning("TensorBoard disabled: %s", e)
            return None

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """What a checkpoint holds: weights, optimizer, schedule, scaler, the :class:`TrainState` counters
        (top-level keys), the RNG state, the resolved config, the git commit, the class names and the process
        layout. With ``train.ema`` ``"model"`` holds the EMA weights (what eval.py and test.py load),
        ``"model_train"`` the trained ones."""
        self.state.metrics_lines = self.metrics.lines
        state = {"model": _unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict() if self.scaler else None,
                 **self.state.state_dict(), "rng": rng_state(), "config": config_to_dict(self.cfg),
                 "git_commit": git_commit(), "class_names": list(self.train_set.class_names),
                 "world_size": self.world_size, "accumulate": self.accumulate}
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
        self.state = TrainState.from_checkpoint(state)
        if "recorded_iteration" not in state:
            records = epoch_records(self.metrics.records())
            self.state.recorded_iteration = int(records[-1]["iteration"]) if records else -1
        set_rng_state(state["rng"])
        self._log_layout_change(state.get("world_size"), state.get("accumulate"))

    def _log_layout_change(self, world_size: Optional[int], accumulate: Optional[int]) -> None:
        if world_size is None or (world_size, accumulate) == (self.world_size, self.accumulate):
            return
        logger.warning("this run was checkpointed with %d process(es) x accumulate %s and continues with %d x %d: "
                       "the global batch (%d), the schedule and the position in the epoch stay, but each process now "
                       "sees %d images per micro-batch, so BatchNorm batch statistics and the float summation order "
                       "differ from an uninterrupted run (not bit-exact)", world_size, accumulate, self.world_size,
                       self.accumulate, self.cfg.solver.batch_size, self.batch_per_process)

    def sync_model(self) -> None:
        sync_model(self.model, self.ema)

    def checkpoint(self, name: str) -> None:
        """Write ``OUTPUT_DIR/name`` (rank 0; every rank calls it, for :meth:`sync_model`)."""
        self.sync_model()
        if is_main_process():
            save_checkpoint(self.output_dir / name, self.state_dict())

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict:
        """Train to ``max_iter`` and finish the bookkeeping; returns the final record."""
        s = self.state
        while s.iteration < self.max_iter or s.recorded_iteration < s.iteration:
            t_epoch = time.perf_counter()
            steps = self.train_one_epoch() if s.iteration < self.max_iter else 0
            self.end_of_epoch(t_epoch, trained=steps > 0)
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if not self.last_record and is_main_process():  # nothing left to do: the run was complete
            self.last_record = final_record(self.metrics.records()) or {}
        return self.last_record

    def train_one_epoch(self) -> int:
        """Steps until the epoch or the schedule ends; returns how many batches were consumed."""
        s = self.state
        if s.step_in_epoch >= self.steps_per_epoch:  # resumed at the end of an epoch
            return 0
        self.sampler.set_epoch(s.epoch, start=s.step_in_epoch * self.batch_per_process * self.accumulate)
        it = iter(self.loader)
        consumed = 0
        while s.iteration < self.max_iter:
            batches = _micro_batches(it, self.accumulate)
            if batches is None:
                break
            self.step(batches)
            consumed += 1
        return consumed

    def step(self, batches) -> None:
        """One step; a non-finite one is rolled back (:meth:`roll_back`), one the GradScaler skipped is counted."""
        s, cfg = self.state, self.cfg
        buffers = [b.detach().clone() for b in _unwrap(self.model).buffers()]  # what a forward pass changes
        try:
            logs = train_step(self.model, self.optimizer, batches, device=self.device,
                              normalization=cfg.model.loss.normalization, scaler=self.scaler, amp=self.amp,
                              clip_grad_norm=cfg.solver.clip_grad_norm)
        except NonFiniteLossError as e:
            self.roll_back(buffers, e, batches)
            return
        s.step_in_epoch += 1
        if logs.pop("skipped"):
            s.skipped_steps += 1
            logger.warning("iteration %d: the GradScaler skipped the step (inf / NaN gradients); scale now %g "
                           "(%d skipped so far)", s.iteration, self.scaler.get_scale(), s.skipped_steps)
            return
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        s.iteration += 1
        s.add_losses(logs)
        lr = self.optimizer.param_groups[-1]["lr"]
        self.bar.update(1)
        self._estimate_once()
        self.bar.set_postfix(loss=f"{logs['loss']:.3f}", cls=f"{logs['loss_cls']:.3f}",
                             box=f"{logs['loss_box_reg']:.3f}", lr=f"{lr:.2e}")
        if s.iteration % cfg.train.log_period == 0:
            self.log_iteration(lr)
        if cfg.train.checkpoint_period_iters and s.iteration % cfg.train.checkpoint_period_iters == 0:
            self.checkpoint("last.pth")

    ESTIMATE_AFTER = 10  # steps timed before the one-line estimate of the run's length

    def _estimate_once(self) -> None:
        """One log line, ``ESTIMATE_AFTER`` steps into this process: about how long the rest takes on this machine
        (steps at the speed so far; evaluations not counted)."""
        if not hasattr(self, "_t_steps"):
            self._t_steps, self._steps_timed = time.perf_counter(), 0
            return
        self._steps_timed += 1
        if self._steps_timed != self.ESTIMATE_AFTER or not is_main_process():
            return
        per_step = (time.perf_counter() - self._t_steps) / self._steps_timed
        left = max(0, self.max_iter - self.state.iteration)
        logger.info("about %.0f min left on this machine: %d steps at %.2f s per step (evaluations not counted)",
                    left * per_step / 60, left, per_step)

    def roll_back(self, buffers: list[torch.Tensor], error: NonFiniteLossError, batches) -> None:
        """Return to the last good state after a non-finite step, or stop after ``train.nan_retries`` of them.

        The last good state is the one before the step, kept in memory: the step raised before the optimizer
        step, so the parameters, the optimizer, the scaler, the EMA, the schedule and the iteration count are
        untouched, and what the forward pass changed (BatchNorm running statistics) is restored from the copy
        taken before it (a few MB). The step's batch is skipped, not replayed (on the same weights it gives the
        same non-finite loss); the sampler moves past it. Every rank raised, so every rank decides the same.
        """
        s = self.state
        with torch.no_grad():
            for b, saved in zip(_unwrap(self.model).buffers(), buffers):
                b.copy_(saved)
        self.optimizer.zero_grad(set_to_none=True)
        s.nan_rollbacks += 1
        s.step_in_epoch += 1
        files = [t.get("file_name", t.get("image_id")) for _, targets in batches for t in targets]
        where = f"iteration {s.iteration} (epoch {s.epoch}, batch {s.step_in_epoch} of the epoch)"
        if s.nan_rollbacks > self.cfg.train.nan_retries:
            raise NonFiniteRunError(f"stopping at {where}: {error} (after {s.nan_rollbacks - 1} rollbacks, "
                                    f"train.nan_retries={self.cfg.train.nan_retries}); the last checkpoint is "
                                    f"{self.output_dir / 'last.pth'}")
        logger.error("%s: %s; rolled back to the state before the step and skipped its batch (%s) (rollback %d of "
                     "train.nan_retries=%d)", where, error, ", ".join(map(str, files[:4])) + (" ..." if len(files) > 4
                                                                                           else ""),
                     s.nan_rollbacks, self.cfg.train.nan_retries)

    def log_iteration(self, lr: float) -> None:
        """An iteration record (mean losses since the previous one) and the TensorBoard points."""
        s = self.state
        means = s.take_log_means()
        self.metrics.append({"type": ITER, "iteration": s.iteration, "epoch": s.epoch,
                             "steps_per_epoch": self.steps_per_epoch, "lr": lr, **means,
                             "time_s": round(time.perf_counter() - self.t_start, 1)})
        if self.writer is not None:
            for k, v in means.items():
                self.writer.add_scalar(f"train/{k}", v, s.iteration)
            self.writer.add_scalar("train/lr", lr, s.iteration)

    def end_of_epoch(self, t_epoch: float, trained: bool) -> None:
        """The epoch record (evaluated when due), best.pth, then the last.pth that closes the epoch."""
        s = self.state
        epoch_done = s.step_in_epoch >= self.steps_per_epoch
        finished = s.iteration >= self.max_iter
        evaluate_now = finished or (epoch_done and self.cfg.train.eval_period > 0
                                    and (s.epoch + 1) % self.cfg.train.eval_period == 0)
        if evaluate_now and trained:
            self.checkpoint("last.pth")  # the trained weights are safe before the (long) evaluation
        record = self.epoch_record(t_epoch)
        if evaluate_now:
            record.update(self.evaluate(final=finished))
        self.metrics.append(record)
        s.recorded_iteration = s.iteration
        if epoch_done:
            s.next_epoch()
        self.save_best(record, finished)
        self.checkpoint("last.pth")
        if is_main_process():
            logger.info("epoch %d: %s", record["epoch"], json.dumps(record))
        self.last_record = record
        barrier()

    def epoch_record(self, t_epoch: float) -> dict:
        s = self.state
        record = {"epoch": s.epoch, "iteration": s.iteration, "lr": self.optimizer.param_groups[-1]["lr"],
                  "time_s": round(time.perf_counter() - self.t_start, 1),
                  "epoch_time_s": round(time.perf_counter() - t_epoch, 1), **s.epoch_means()}
        for counter in ("skipped_steps", "nan_rollbacks"):  # only when they happened: the usual record stays
            if getattr(s, counter):
                record[counter] = getattr(s, counter)
        return record

    def save_best(self, record: dict, finished: bool) -> None:
        """best.pth when the record's AP is the best so far (the final one is written in any case)."""
        s = self.state
        ap = record.get("AP", record.get("mAP", -1.0))
        if is_main_process() and (ap > s.best_ap or (finished and not (self.output_dir / "best.pth").is_file())):
            s.best_ap = max(ap, s.best_ap)
            save_checkpoint(self.output_dir / "best.pth", self.state_dict())

    def evaluate(self, final: bool = True) -> dict:
        """The metrics of the evaluated weights (the EMA's with ``train.ema``), without the per-class entries; the
        PR curve PNG beside the metrics JSON at the ``final`` evaluation only (each drawing takes about 0.4 s)."""
        self.sync_model()
        model = self.ema.module if self.ema is not None else _unwrap(self.model)
        path = self.output_dir / "eval" / f"metrics_iter{self.state.iteration}.json" if is_main_process() else None
        metrics = evaluate(prepare_for_inference(model), self.val_set, self.val_loader, self.device,
                           DATASETS[self.cfg.data.dataset].metric, self.amp, metrics_path=path, pr_curve=final)
        if self.writer is not None:
            for k in ("AP", "AP50", "AP75", "mAP"):
                if k in metrics:
                    self.writer.add_scalar(f"val/{k}", metrics[k], self.state.iteration)
        return {k: v for k, v in metrics.items() if not k.startswith("AP_")}


def fit(cfg, output_dir: Path, *, device: torch.device, accumulate: int = 1, resume: Optional[str] = None,
        overwrite: bool = False, argv: Optional[list[str]] = None, rank: int = 0, world_size: int = 1,
        max_iter_override: Optional[int] = None, num_workers: Optional[int] = None, progress: bool = True) -> dict:
    """Train ``cfg`` into ``output_dir``; returns the final metrics record. See train.py for the flags."""
    return Trainer(cfg, output_dir, device=device, accumulate=accumulate, resume=resume, overwrite=overwrite,
                   argv=argv, rank=rank, world_size=world_size, max_iter=max_iter_override, num_workers=num_workers,
                   progress=progress).run()
