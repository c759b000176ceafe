"""How each process starts its part of a run: decisions made once, on rank 0, and shared with every rank.

* :func:`on_rank0`: a piece of work (reading the run folder, a checkpoint) done by rank 0 only, its result and
  its user error shared with every rank, because the other ranks may run on nodes that do not share rank 0's disk;
* :func:`start_run`: the run folder's decision (:func:`engine.run_folder.plan_start`), the seed, the run's files;
* :func:`user_errors_end_the_run`: a user error is recorded in the run folder, and an elastic restart of the same
  command that finds the record ends at once (torchrun restarts failed workers whatever their error).
"""
from __future__ import annotations

import contextlib
import logging
import os
import random
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from config import config_to_dict
from engine.run_folder import StartPlan, clear_stop, discard_run, plan_start, record_stop, stopped_run
from engine.run_info import write_run_info
from models.pretrained import pretrained_path
from utils.checkpoint import remove_stale_temporaries
from utils.distributed import broadcast_object, is_main_process
from utils.errors import UserError
from utils.script import user_message

logger = logging.getLogger(__name__)


def on_rank0(work: Callable, *, share: bool = True):
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


def elastic_attempt() -> int:
    """Which attempt of torchrun's elastic agent this process belongs to (0: the first, or no torchrun)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


class RestartRefused(UserError):
    """An elastic restart of a run that stopped on a user error: it would replay into the same stop."""


@contextlib.contextmanager
def user_errors_end_the_run(output_dir: Path, argv: Sequence[str]):
    """Around a whole train.py command: a :class:`UserError` it raises is recorded in ``output_dir`` (rank 0) and
    raised; a restarted attempt of the same command that finds the record raises :class:`RestartRefused` before
    doing anything. The first attempt clears an old record (a new command: the user fixed what was wrong)."""
    attempt = elastic_attempt()

    def look():
        if attempt == 0:
            clear_stop(output_dir)
            return None
        return stopped_run(output_dir, list(argv))

    stop = on_rank0(look)
    if stop is not None:
        raise RestartRefused(f"elastic restart {attempt} does not continue this run: it stopped at {stop['time']} on "
                             f"the error above ({Path(output_dir) / 'stopped.json'}), which a restart would meet "
                             f"again; fix it and run the command again")
    try:
        yield
    except UserError as e:
        if is_main_process():
            record_stop(output_dir, list(argv), user_message(e))
        raise


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def check_start(cfg) -> None:
    """A fresh run's start (the ImageNet file or ``train.init_from``) must exist before any data is read."""
    if not cfg.train.init_from:
        pretrained_path(cfg.model.backbone)  # its error names the file, where it is published and where it goes
    elif not Path(cfg.train.init_from).is_file():
        raise UserError(f"train.init_from: checkpoint {cfg.train.init_from} not found (the detector this run "
                        f"starts from; e.g. the 9x model for the stage-2 recipe)")


def start_run(cfg, output_dir: Path, *, resume: Optional[str], overwrite: bool, argv: Sequence[str]) -> StartPlan:
    """The run folder's decision (rank 0's, on every rank), the start's files, the seed, and (rank 0) the run's
    files: config.yaml, command.txt, git_commit.txt, machine.json."""
    plan: StartPlan = on_rank0(lambda: plan_start(output_dir, config_to_dict(cfg), resume=resume,
                                                  overwrite=overwrite))
    logger.info("%s", plan.reason)
    if plan.resume_from is None:
        check_start(cfg)
    seed_everything(cfg.train.seed)
    if is_main_process():
        if plan.discard:
            logger.info("--overwrite: removed %s", ", ".join(discard_run(output_dir)) or "nothing")
        write_run_info(output_dir, cfg, list(argv))  # as given: num_classes may say "auto"
        remove_stale_temporaries(output_dir)
    return plan
