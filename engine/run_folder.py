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

A run that stops on a user error (a config or run-folder mistake, ``NonFiniteRunError``) leaves
``stopped.json`` (:func:`record_stop`): the error and the command. An elastic restart of the same command
(``torchrun --max-restarts``) finds it and ends at once instead of replaying into the same stop; a new command
starts afresh (:func:`clear_stop`), as the user fixed what was wrong.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from config.loader import config_diff
from utils.errors import UserError

logger = logging.getLogger(__name__)

STOP_FILE = "stopped.json"  # a run that ended on a user error: the error and the command (see the module docstring)
RUN_FILES = ("last.pth", "best.pth", "metrics.jsonl")  # what makes a folder hold a run (when not empty)
DISCARDED = RUN_FILES + (STOP_FILE, "config.yaml", "command.txt", "git_commit.txt", "machine.json", "curves.png",
                         "tensorboard", "eval")


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


def record_stop(output_dir: Path, argv: list[str], error: str) -> None:
    """Write ``stopped.json``: the run of ``argv`` (train.py's arguments) ended on the user error ``error``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    record = {"error": error, "argv": list(argv), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    (output_dir / STOP_FILE).write_text(json.dumps(record, indent=1) + "\n")


def stopped_run(output_dir: Path, argv: list[str]) -> Optional[dict]:
    """The stop record of the run of ``argv`` in ``output_dir``, or None (none, or another command's)."""
    path = Path(output_dir) / STOP_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("argv") == list(argv) else None


def clear_stop(output_dir: Path) -> None:
    (Path(output_dir) / STOP_FILE).unlink(missing_ok=True)
