"""A run's output folder: whether a ``train.py`` command starts a run there, continues the one it holds, or stops.

The rule: **a run folder is never overwritten by accident.** When ``--output_dir`` already holds a run
(a checkpoint or records: :data:`RUN_FILES`; a ``config.yaml`` alone is an attempt that stopped before its
first step, e.g. on a wrong data path, and holds nothing to lose):

* with ``--resume`` (or ``--resume CKPT``) the run continues from that checkpoint, as asked;
* with ``--overwrite`` the old run's files are discarded on purpose and a new run starts;
* otherwise, when the folder's ``config.yaml`` equals the requested config, the run continues from its
  ``last.pth`` (the same command run twice, an elastic ``torchrun --max-restarts`` restart, an ablation
  relaunch), or starts again where the run died before its first checkpoint;
* otherwise the command stops before touching anything, with one line naming the folder and the choices.

Under DDP only rank 0 looks at the folder (the trainer broadcasts its decision): the other ranks may run on
nodes that do not share its disk.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from config.loader import config_diff
from utils.errors import UserError

logger = logging.getLogger(__name__)

RUN_FILES = ("last.pth", "best.pth", "metrics.jsonl")  # what makes a folder hold a run (when not empty)
DISCARDED = RUN_FILES + ("config.yaml", "command.txt", "git_commit.txt", "machine.json", "curves.png", "tensorboard",
                         "eval")


class RunExistsError(UserError, FileExistsError):
    """The output folder holds a run that the command would overwrite."""


@dataclass(frozen=True)
class StartPlan:
    """How a run starts: from ``resume_from`` (a checkpoint path) or fresh (None); ``discard``: remove the old
    run's files first (``--overwrite``); ``reason``: one line for the log."""

    resume_from: Optional[str]
    reason: str
    discard: bool = False


def plan_start(output_dir: Path, config: dict, *, resume: Optional[str] = None,
               overwrite: bool = False) -> StartPlan:
    """The :class:`StartPlan` of a ``train.py`` command (see the module docstring).

    Args:
        config: the requested config as :func:`config.config_to_dict` gives it (as given: ``num_classes`` may
            still say ``auto``), compared with the folder's ``config.yaml``.
        resume: ``"auto"`` (``--resume``: ``OUTPUT_DIR/last.pth`` when there is one), a checkpoint path, or None.
    """
    output_dir = Path(output_dir)
    last = output_dir / "last.pth"
    if resume and resume != "auto":
        return StartPlan(str(resume), f"--resume {resume}")
    if resume == "auto":
        if last.is_file():
            return StartPlan(str(last), f"--resume: continuing from {last}")
        return StartPlan(None, f"--resume: {last} does not exist yet, starting a new run")
    held = [name for name in RUN_FILES if (output_dir / name).is_file() and (output_dir / name).stat().st_size]
    if not held:
        return StartPlan(None, f"new run in {output_dir}")
    if overwrite:
        return StartPlan(None, f"--overwrite: discarding the run in {output_dir} ({', '.join(held)}) and starting "
                               f"a new one", discard=True)
    stored = output_dir / "config.yaml"
    diff = config_diff(yaml.safe_load(stored.read_text()) or {}, config) if stored.is_file() else ["config.yaml"]
    if diff:
        what = f"another config (keys {', '.join(diff[:5])}{' ...' if len(diff) > 5 else ''})" \
            if stored.is_file() else "a run without config.yaml"
        raise RunExistsError(f"{output_dir} already holds {what}: continue it with --resume, choose another "
                             f"--output_dir, or pass --overwrite to discard it")
    if last.is_file():
        return StartPlan(str(last), f"{output_dir} holds a run of this config: continuing it from {last} "
                                    f"(no --resume needed; --overwrite starts over)")
    return StartPlan(None, f"{output_dir} holds the start of a run of this config without a checkpoint: "
                           f"starting it again")


def discard_run(output_dir: Path) -> list[str]:
    """Remove the files of the run in ``output_dir`` (``--overwrite``); returns their names. ``log.txt`` stays
    (it is the folder's history, appended to)."""
    removed = []
    for name in DISCARDED:
        path = Path(output_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed
