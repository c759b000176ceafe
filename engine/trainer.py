"""The training loop: one epoch and one step, top to bottom, with the safeguards beside them.

    fit(cfg, RunOptions(output_dir))
      Trainer.__init__     the run folder's decision, data, model, solver, resume  (run_start, build, checkpointer)
      Trainer.run          while not finished: train_one_epoch(), end_of_epoch()
        train_one_epoch    the epoch's batches from the sampler's position -> run_step(batches)
          run_step         train_step (engine/step.py), then the schedule, the EMA, the counters, the log
        end_of_epoch       the epoch record (evaluated when due), best.pth, last.pth

Beside the loop, each in its own module: the non-finite guard (engine/nonfinite.py), checkpoints and resume
(engine/checkpointer.py), evaluation and best.pth (engine/validation.py), the bar, records and estimate
(engine/progress.py), the distributed start and the run folder (engine/run_start.py, engine/run_folder.py).
"""
from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from engine.build import batch_per_process, build_solver, build_training_data, build_training_model
from engine.checkpointer import Checkpointer
from engine.ema import ModelEMA
from engine.metrics_log import MetricsLog, final_record
from engine.nonfinite import NonFiniteGuard
from engine.optim import effective_schedule
from engine.progress import Progress
from engine.run_start import start_run
from engine.state import TrainState
from engine.step import NonFiniteLossError, train_step  # a module global: tests wrap it
from engine.validation import Validator
from utils.distributed import barrier, get_rank, get_world_size, is_main_process
from utils.precision import resolve_amp

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """What a train.py command says besides the config: its flags."""

    output_dir: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    accumulate: int = 1  # micro-batches per optimizer step
    resume: Optional[str] = None  # "auto" (OUTPUT_DIR/last.pth), a checkpoint path, or None
    overwrite: bool = False  # discard the run the folder holds
    argv: Optional[Sequence[str]] = None  # train.py's arguments for command.txt (None: sys.argv[1:])
    max_iter: Optional[int] = None  # stop after this many steps instead of the schedule's
    progress: bool = True  # the tqdm bar


def fit(cfg, options: RunOptions) -> dict:
    """Train ``cfg`` as ``options`` say; returns the final metrics record. See train.py for the flags."""
    return Trainer(cfg, options).run()


def next_micro_batches(batches, n: int):
    """The next ``n`` (images, targets) batches, or None at the end of the epoch."""
    out = []
    for _ in range(n):
        try:
            out.append(next(batches))
        except StopIteration:
            return None
    return out


class Trainer:
    def __init__(self, cfg, options: RunOptions):
        """Set-up in the order that fixes a run's random numbers: the folder's decision and the seed, data, model,
        solver, then the checkpoint to continue from."""
        self.options, self.device, self.accumulate = options, options.device, options.accumulate
        self.output_dir, self.world_size = Path(options.output_dir), get_world_size()
        self.schedule = effective_schedule(cfg.solver)
        self.max_iter = options.max_iter or self.schedule.max_iter
        batch_per_process(cfg.solver.batch_size, self.world_size, self.accumulate)  # before the folder is touched
        plan = start_run(cfg, self.output_dir, resume=options.resume, overwrite=options.overwrite,
                         argv=sys.argv[1:] if options.argv is None else options.argv)
        self.cfg, self.data = build_training_data(cfg, rank=get_rank(), world_size=self.world_size,
                                                  accumulate=self.accumulate)
        self.class_names = self.data.train_set.class_names
        self.amp = resolve_amp(self.cfg.solver.amp, self.device)
        self.model = build_training_model(self.cfg, self.device, world_size=self.world_size,
                                          fresh=plan.resume_from is None, class_names=self.class_names)
        self.optimizer, self.scheduler, self.scaler = build_solver(self.model, self.cfg, self.schedule, self.amp,
                                                                   self.device)
        # train.ema: an average of the weights, evaluated and saved as "model"
        self.ema = ModelEMA(self.model, self.cfg.train.ema_decay, self.cfg.train.ema_ramp) if self.cfg.train.ema \
            else None
        self.metrics = MetricsLog(self.output_dir / "metrics.jsonl", enabled=is_main_process())
        self.state = TrainState()
        self.checkpointer = Checkpointer(self, self.output_dir)
        if plan.resume_from is not None:
            self.checkpointer.resume(plan.resume_from)
        self.metrics.cut(self.state.metrics_lines)
        self.state.metrics_lines = self.metrics.lines
        self.guard = NonFiniteGuard(self.model, self.optimizer, self.cfg.train.nan_retries,
                                    self.output_dir / "last.pth")
        if self.world_size > 1:
            self.model = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.validator = Validator(self, self.output_dir)
        self.progress = Progress(self.metrics, output_dir=self.output_dir, state=self.state, max_iter=self.max_iter,
                                 log_period=self.cfg.train.log_period, steps_per_epoch=self.data.steps_per_epoch,
                                 main_process=is_main_process(), bar=options.progress)
        self.last_record: dict = {}

    def run(self) -> dict:
        """Train to ``max_iter``; returns the final record."""
        s = self.state
        while s.iteration < self.max_iter or s.recorded_iteration < s.iteration:  # a step left, or its record
            t_epoch = time.perf_counter()
            trained = self.train_one_epoch() if s.iteration < self.max_iter else 0
            self.end_of_epoch(t_epoch, trained=trained > 0)
        self.progress.close()
        if not self.last_record and is_main_process():  # nothing was left to do: the run was complete
            self.last_record = final_record(self.metrics.records()) or {}
        return self.last_record

    def train_one_epoch(self) -> int:
        """Steps until the epoch or the schedule ends; returns how many batches were consumed."""
        s, data = self.state, self.data
        start = s.step_in_epoch
        if start >= data.steps_per_epoch:  # resumed at the end of an epoch
            return 0
        data.sampler.set_epoch(s.epoch, start=start * data.images_per_step)
        batches = iter(data.loader)
        while s.iteration < self.max_iter:
            with self.progress.waiting_for_data():
                micro_batches = next_micro_batches(batches, self.accumulate)
            if micro_batches is None:
                break
            self.run_step(micro_batches)
        return s.step_in_epoch - start

    def run_step(self, micro_batches) -> None:
        """One optimizer step. Its batch is consumed whatever happens: a non-finite step is rolled back, one the
        GradScaler skipped changes nothing but the scale."""
        s, cfg = self.state, self.cfg
        snapshot = self.guard.snapshot()  # what the forward pass changes
        try:
            logs = train_step(self.model, self.optimizer, micro_batches, device=self.device,
                              normalization=cfg.model.loss.normalization, scaler=self.scaler, amp=self.amp,
                              clip_grad_norm=cfg.solver.clip_grad_norm)
        except NonFiniteLossError as error:
            s.step_in_epoch += 1
            self.guard.roll_back(s, snapshot, error, micro_batches)
            return
        s.step_in_epoch += 1
        if logs.pop("skipped"):
            self.guard.restore(snapshot)
            s.skipped_steps += 1
            logger.warning("iteration %d: the GradScaler skipped the step (an overflow); scale now %g (%d skipped "
                           "so far)", s.iteration, self.scaler.get_scale(), s.skipped_steps)
            return
        self.guard.step_was_taken(s)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        s.iteration += 1
        s.add_losses(logs)
        self.progress.after_step(s, logs, lr=self.optimizer.param_groups[-1]["lr"])
        if cfg.train.checkpoint_period_iters and s.iteration % cfg.train.checkpoint_period_iters == 0:
            self.checkpointer.save("last.pth")

    def end_of_epoch(self, t_epoch: float, trained: bool) -> None:
        """The epoch record (evaluated when due), best.pth, then the last.pth that closes the epoch."""
        s = self.state
        epoch_done = s.step_in_epoch >= self.data.steps_per_epoch
        finished = s.iteration >= self.max_iter
        evaluate = self.validator.due(s.epoch, epoch_done, finished)
        if evaluate and trained:
            self.checkpointer.save("last.pth")  # the trained weights are safe before the (long) evaluation
        record = self.epoch_record(t_epoch)
        if evaluate:
            record.update(self.validator.evaluate(final=finished))
        self.metrics.append(record)
        s.recorded_iteration = s.iteration
        if epoch_done:
            s.next_epoch()
        self.validator.keep_best(record, finished)
        self.checkpointer.save("last.pth")
        if is_main_process():
            logger.info("epoch %d: %s", record["epoch"], json.dumps(record))
        self.last_record = record
        barrier()

    def epoch_record(self, t_epoch: float) -> dict:
        s = self.state
        record = {"epoch": s.epoch, "iteration": s.iteration, "lr": self.optimizer.param_groups[-1]["lr"],
                  "time_s": round(self.progress.elapsed(), 1),
                  "epoch_time_s": round(time.perf_counter() - t_epoch, 1), **s.epoch_losses.means()}
        for counter in ("skipped_steps", "nan_rollbacks"):  # run totals, only when they happened
            if getattr(s, counter):
                record[counter] = getattr(s, counter)
        return record
