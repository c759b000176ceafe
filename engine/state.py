"""Where a run is: the counters a checkpoint stores to continue it exactly, and the loss sums behind its records."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class LossMeans:
    """Sums of the logged losses since a point (an epoch's start, the last iteration record)."""

    sums: dict = field(default_factory=dict)
    count: int = 0

    def add(self, logs: dict) -> None:
        for k, v in logs.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def means(self) -> dict:
        return {k: v / max(1, self.count) for k, v in self.sums.items()}

    def take(self) -> dict:
        """The means, and start again from nothing."""
        means = self.means()
        self.sums, self.count = {}, 0
        return means


@dataclass
class TrainState:
    """The counters of a run. A checkpoint stores them as top-level keys, under these names (the two loss sums as
    ``epoch_sums``/``epoch_count`` and ``log_sums``/``log_count``).

    ``iteration`` counts optimizer steps taken; ``step_in_epoch`` counts the global batches the epoch has consumed
    (the sampler's position), including those of steps that were not taken (a GradScaler skip, a rolled-back
    non-finite step).
    """

    iteration: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    best_ap: float = -1.0
    recorded_iteration: int = 0  # iteration of the last epoch record: the run is complete when it is max_iter
    metrics_lines: Optional[int] = 0  # lines of metrics.jsonl at the checkpoint (None: keep the file as it is)
    skipped_steps: int = 0  # steps the GradScaler skipped (inf / NaN under fp16), over the whole run
    nan_rollbacks: int = 0  # non-finite steps rolled back, over the whole run
    nan_streak: int = 0  # non-finite steps since the last good one (at most train.nan_retries)
    epoch_losses: LossMeans = field(default_factory=LossMeans)  # the epoch record's means
    log_losses: LossMeans = field(default_factory=LossMeans)  # the next iteration record's means

    COUNTERS = ("iteration", "epoch", "step_in_epoch", "best_ap", "recorded_iteration", "metrics_lines",
                "skipped_steps", "nan_rollbacks", "nan_streak")

    def state_dict(self) -> dict:
        return {**{k: getattr(self, k) for k in self.COUNTERS},
                "epoch_sums": dict(self.epoch_losses.sums), "epoch_count": self.epoch_losses.count,
                "log_sums": dict(self.log_losses.sums), "log_count": self.log_losses.count}

    @classmethod
    def from_checkpoint(cls, state: dict) -> "TrainState":
        """The counters of a checkpoint; a counter it lacks takes its default (``metrics_lines``: None)."""
        s = cls(**{k: state[k] for k in cls.COUNTERS if k in state})
        s.epoch_losses = LossMeans(dict(state.get("epoch_sums", {})), state.get("epoch_count", 0))
        s.log_losses = LossMeans(dict(state.get("log_sums", {})), state.get("log_count", 0))
        if "metrics_lines" not in state:
            s.metrics_lines = None
        return s

    def add_losses(self, logs: dict) -> None:
        self.epoch_losses.add(logs)
        self.log_losses.add(logs)

    def next_epoch(self) -> None:
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_losses = LossMeans()
