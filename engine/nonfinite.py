"""The safeguard against non-finite steps: roll a bad step back and go on, or stop the run when they come in a row.

A long run meets the odd non-finite loss (a degenerate batch, an unlucky rounding): the step is undone and its
batch skipped, and a good step forgets it. Only ``train.nan_retries`` non-finite steps *in a row* stop the run,
which then cannot recover (diverged weights, a broken input pipeline). The run's total is logged and kept in
its epoch records (``nan_rollbacks``).

Every rank sees the same outcome: :func:`engine.step.train_step` decides finiteness for all ranks at once, before
the optimizer step, so the parameters, the optimizer, the scaler, the EMA and the schedule are untouched by a bad
step; what its forward pass changed (BatchNorm running statistics) is restored from a copy taken before it.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from engine.state import TrainState
from engine.step import NonFiniteLossError
from utils.errors import UserError

logger = logging.getLogger(__name__)


class NonFiniteRunError(UserError, FloatingPointError):
    """Training stopped: more than ``train.nan_retries`` non-finite steps in a row."""


class NonFiniteGuard:
    """Snapshots what a forward pass changes, and rolls a non-finite step back (see the module docstring)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, max_in_a_row: int, last_checkpoint: Path):
        self.model, self.optimizer = model, optimizer
        self.max_in_a_row, self.last_checkpoint = max_in_a_row, last_checkpoint

    def snapshot(self) -> list[torch.Tensor]:
        """The model's buffers (BatchNorm running statistics: a few MB), before a step."""
        return [b.detach().clone() for b in self.model.buffers()]

    @torch.no_grad()
    def restore(self, snapshot: list[torch.Tensor]) -> None:
        for b, saved in zip(self.model.buffers(), snapshot):
            b.copy_(saved)

    def roll_back(self, state: TrainState, snapshot: list[torch.Tensor], error: NonFiniteLossError,
                  batches) -> None:
        """Undo a non-finite step and skip its batch (on the same weights it would give the same loss), or raise
        :class:`NonFiniteRunError` when it is the ``max_in_a_row + 1``-th in a row."""
        self.restore(snapshot)
        self.optimizer.zero_grad(set_to_none=True)
        state.nan_rollbacks += 1
        state.nan_streak += 1
        where = f"iteration {state.iteration} (epoch {state.epoch}, batch {state.step_in_epoch} of the epoch)"
        if state.nan_streak > self.max_in_a_row:
            last = f"the last checkpoint is {self.last_checkpoint}" if self.last_checkpoint.is_file() else \
                "no checkpoint yet"
            steps = "step" if state.nan_streak == 1 else "steps"
            raise NonFiniteRunError(f"stopping at {where}: {error} ({state.nan_streak} non-finite {steps} in a row, "
                                    f"train.nan_retries={self.max_in_a_row}); {last}")
        files = [str(t.get("file_name", t.get("image_id"))) for _, targets in batches for t in targets]
        logger.error("%s: %s; rolled back to the state before the step and skipped its batch (%s) (%d in a row of "
                     "train.nan_retries=%d; %d in this run)", where, error,
                     ", ".join(files[:4]) + (" ..." if len(files) > 4 else ""), state.nan_streak, self.max_in_a_row,
                     state.nan_rollbacks)

    @staticmethod
    def step_was_taken(state: TrainState) -> None:
        """A finite step ends a streak of non-finite ones."""
        state.nan_streak = 0
