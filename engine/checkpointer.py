"""Checkpoints of a run: what ``last.pth`` and ``best.pth`` hold, writing them, and continuing from one.

A checkpoint holds the weights, the optimizer, the schedule, the scaler, the :class:`engine.state.TrainState`
counters (top-level keys), the RNG state, the resolved config, the git commit, the class names and the process
layout. With ``train.ema`` ``"model"`` holds the EMA weights (what eval.py and test.py load), ``"model_train"``
the trained ones.

What a kill can leave, and what a resume from ``last.pth`` does with it:

* ``metrics.jsonl`` records written after the checkpoint are cut (the checkpoint counts the lines) and written
  again when their work is redone; an epoch record is written *before* the checkpoint that closes its epoch;
* before an evaluation the trained weights are checkpointed; a run killed during its last evaluation resumes at
  ``max_iter``, evaluates, writes its final record (and ``best.pth``), and stops;
* checkpoints are written atomically (a killed write leaves the previous file; its temporary is removed).

A run continues on another process layout (W' processes x accumulate A' for W x A) as long as the global batch
(``solver.batch_size``) is the one it was checkpointed with: the schedule and the sampler's position are counted
in global batches. Another global batch is refused (:func:`check_same_batch`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from config import config_to_dict
from engine.ema import ModelEMA
from engine.metrics_log import epoch_records
from engine.run_info import git_commit, rng_state, set_rng_state
from engine.run_start import on_rank0
from engine.state import TrainState
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.distributed import all_gather_object, broadcast_bytes, broadcast_tensors, get_rank, is_dist, \
    is_main_process
from utils.errors import UserError

logger = logging.getLogger(__name__)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DDP) else model


def sync_model(model: nn.Module, ema: Optional[ModelEMA] = None) -> None:
    """One model per run: rank 0's buffers (BatchNorm running statistics) and EMA on every rank, before each
    evaluation and checkpoint. DDP keeps the parameters equal, but each rank's buffers drift with its own last
    batches, so ranks would evaluate different models and the checkpoint (rank 0's) would not be what was scored."""
    broadcast_tensors(unwrap(model).buffers())
    if ema is not None:
        broadcast_tensors(ema.module.state_dict().values())


def read_checkpoint_everywhere(path: str) -> dict:
    """The checkpoint at ``path`` as rank 0 reads it, on every rank: the other ranks receive its bytes (their
    nodes may not share rank 0's disk) and read them as a file (``weights_only``). A rank that cannot read them
    stops the run on every rank, in one line naming the rank and the path."""
    if not is_dist():
        return load_checkpoint(path)
    loaded = on_rank0(lambda: (load_checkpoint(path), Path(path).read_bytes()), share=False)
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


def check_same_batch(checkpoint: dict, batch_size: int, path: str) -> None:
    """A run continues with the global batch it was checkpointed with (see the module docstring)."""
    before = (checkpoint.get("config") or {}).get("solver", {}).get("batch_size")
    if before is not None and before != batch_size:
        raise UserError(f"{path} was trained with solver.batch_size={before}, this run asks for {batch_size}: its "
                        f"schedule and its place in the epoch are counted in batches of {before}. Continue with "
                        f"--opts solver.batch_size={before} (--accumulate N fits it in less memory), or start a new "
                        f"run from its weights with --opts train.init_from={path}")


class Checkpointer:
    """Saves and restores a trainer's run (its ``model``, ``optimizer``, ``scheduler``, ``scaler``, ``ema``,
    ``state``, ``metrics``, ``cfg``, ``class_names``, ``world_size`` and ``accumulate``)."""

    def __init__(self, trainer, output_dir: Path):
        self.trainer, self.output_dir = trainer, Path(output_dir)

    def state_dict(self) -> dict:
        t = self.trainer
        t.state.metrics_lines = t.metrics.lines
        state = {"model": unwrap(t.model).state_dict(), "optimizer": t.optimizer.state_dict(),
                 "scheduler": t.scheduler.state_dict(), "scaler": t.scaler.state_dict() if t.scaler else None,
                 **t.state.state_dict(), "rng": rng_state(), "config": config_to_dict(t.cfg),
                 "git_commit": git_commit(), "class_names": list(t.class_names), "world_size": t.world_size,
                 "accumulate": t.accumulate}
        if t.ema is not None:
            state["model_train"], state["model"] = state["model"], t.ema.module.state_dict()
            state["ema_updates"] = t.ema.updates
        return state

    def save(self, name: str, *, sync: bool = True) -> None:
        """Write ``OUTPUT_DIR/name`` (rank 0). With ``sync`` every rank must call it (:func:`sync_model`)."""
        if sync:
            sync_model(self.trainer.model, self.trainer.ema)
        if is_main_process():
            save_checkpoint(self.output_dir / name, self.state_dict())

    def resume(self, path: str) -> None:
        """Continue from the checkpoint at ``path``."""
        t = self.trainer
        state = read_checkpoint_everywhere(path)
        check_same_batch(state, t.cfg.solver.batch_size, path)
        unwrap(t.model).load_state_dict(state.get("model_train", state["model"]))
        t.optimizer.load_state_dict(state["optimizer"])
        t.scheduler.load_state_dict(state["scheduler"])
        if t.scaler is not None and state.get("scaler"):
            t.scaler.load_state_dict(state["scaler"])
        if t.ema is not None:  # a checkpoint without an average starts it at its weights
            has_ema = "model_train" in state
            t.ema.load_state_dict({"module": state["model"], "updates": state["ema_updates"] if has_ema else 0})
        t.state = TrainState.from_checkpoint(state)
        if "recorded_iteration" not in state:
            records = epoch_records(t.metrics.records())
            t.state.recorded_iteration = int(records[-1]["iteration"]) if records else -1
        set_rng_state(state["rng"])
        self._log_layout_change(state.get("world_size"), state.get("accumulate"))
        logger.info("resumed from %s at epoch %d, iteration %d", path, t.state.epoch, t.state.iteration)

    def _log_layout_change(self, world_size: Optional[int], accumulate: Optional[int]) -> None:
        t = self.trainer
        if world_size is None or (world_size, accumulate) == (t.world_size, t.accumulate):
            return
        logger.warning("this run was checkpointed with %d process(es) x accumulate %s and continues with %d x %d: "
                       "the global batch (%d), the schedule and the position in the epoch stay, but each process now "
                       "sees %d images per micro-batch, so BatchNorm batch statistics and the float summation order "
                       "differ from an uninterrupted run (not bit-exact)", world_size, accumulate, t.world_size,
                       t.accumulate, t.cfg.solver.batch_size, t.cfg.solver.batch_size // t.world_size // t.accumulate)
