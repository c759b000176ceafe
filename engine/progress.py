"""What a reader of a run sees while it trains: the progress bar, an iteration record every ``train.log_period``
steps (``metrics.jsonl`` and TensorBoard), one line estimating the run's length, and the time spent waiting for
data (rank 0 writes; every rank measures)."""
from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

from tqdm import tqdm

from engine.metrics_log import ITER, MetricsLog
from engine.state import TrainState

logger = logging.getLogger(__name__)

ESTIMATE_AFTER = 10  # steps timed before the one-line estimate of the run's length


def tensorboard_writer(output_dir: Path, purge_step: int):
    """A SummaryWriter under ``output_dir/tensorboard``, or None when TensorBoard cannot start (a convenience:
    a run never fails for it)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional: heavy

        return SummaryWriter(str(Path(output_dir) / "tensorboard"), purge_step=purge_step)
    except Exception as e:
        logger.warning("TensorBoard disabled: %s", e)
        return None


class Progress:
    def __init__(self, metrics: MetricsLog, *, output_dir: Path, state: TrainState, max_iter: int, log_period: int,
                 steps_per_epoch: int, main_process: bool, bar: bool):
        self.metrics, self.max_iter, self.log_period = metrics, max_iter, log_period
        self.steps_per_epoch, self.main_process = steps_per_epoch, main_process
        self.writer = tensorboard_writer(output_dir, state.iteration) if main_process else None
        self.bar = tqdm(total=max_iter, initial=min(state.iteration, max_iter), disable=not (bar and main_process),
                        dynamic_ncols=True)
        self.t_start = time.perf_counter()
        self.data_wait_s = 0.0  # time spent waiting for the loader in this process
        self.steps_timed, self.t_first_step, self.wait_at_first_step = 0, None, 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    @contextlib.contextmanager
    def waiting_for_data(self):
        t0 = time.perf_counter()
        yield
        self.data_wait_s += time.perf_counter() - t0

    def after_step(self, state: TrainState, logs: dict, lr: float) -> None:
        """A step was taken: the bar, the iteration record when due, the estimate once."""
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{logs['loss']:.3f}", cls=f"{logs['loss_cls']:.3f}",
                             box=f"{logs['loss_box_reg']:.3f}", lr=f"{lr:.2e}")
        if state.iteration % self.log_period == 0:
            self.record(state, lr)
        self._estimate_once(state)

    def record(self, state: TrainState, lr: float) -> None:
        """An iteration record: the mean losses since the previous one, and their TensorBoard points."""
        means = state.log_losses.take()
        self.metrics.append({"type": ITER, "iteration": state.iteration, "epoch": state.epoch,
                             "steps_per_epoch": self.steps_per_epoch, "lr": lr, **means,
                             "time_s": round(self.elapsed(), 1)})
        if self.writer is not None:
            for k, v in means.items():
                self.writer.add_scalar(f"train/{k}", v, state.iteration)
            self.writer.add_scalar("train/lr", lr, state.iteration)

    def _estimate_once(self, state: TrainState) -> None:
        """One log line, ``ESTIMATE_AFTER`` steps into this process: about how long the rest takes on this machine
        (steps at the speed so far, the first step excluded: it pays for warm-up; evaluations not counted)."""
        if self.t_first_step is None:
            self.t_first_step, self.wait_at_first_step = time.perf_counter(), self.data_wait_s
            return
        self.steps_timed += 1
        if self.steps_timed != ESTIMATE_AFTER or not self.main_process:
            return
        timed = time.perf_counter() - self.t_first_step
        per_step = timed / self.steps_timed
        left = max(0, self.max_iter - state.iteration)
        logger.info("about %.0f min left on this machine: %d steps at %.2f s per step (%.0f%% of it waiting for "
                    "data; evaluations not counted)", left * per_step / 60, left, per_step,
                    100 * (self.data_wait_s - self.wait_at_first_step) / max(timed, 1e-9))

    def add_scalars(self, prefix: str, values: dict, iteration: int) -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"{prefix}/{k}", v, iteration)

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
