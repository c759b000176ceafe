"""A run's results: whether it is finished, and its small files copied to the committed logs.

A run is finished when its ``metrics.jsonl`` holds its final record (the last epoch record, evaluated, at the
planned last iteration: :mod:`engine.metrics_log`); ``done.json`` (written here) only summarises it. The small
files (:data:`LOG_FILES`) of a finished run are copied to ``<logs-dir>/<spec>/<row>/seed<k>/`` (``ablations/runs``,
committed), from which :mod:`studies.table` makes the README table. A run whose logs there are finished (and hold
the planned config) counts as done even when its run folder is gone, so a study spans sessions and machines.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Callable

from engine.metrics_log import final_record, read_metrics
from studies.spec import PlannedRun, Spec, check_existing, display_path

LOG_FILES = ("config.yaml", "metrics.jsonl", "command.txt", "git_commit.txt", "machine.json", "done.json")


def is_finished(run_dir: Path, max_iter: int) -> bool:
    """The run's ``metrics.jsonl`` holds its final record: evaluated, at the planned last iteration."""
    return final_record(read_metrics(Path(run_dir) / "metrics.jsonl"), max_iter) is not None


def logged_dir(spec: Spec, run: PlannedRun, logs_dir: Path | str) -> Path:
    return Path(logs_dir) / spec.name / run.row.name / f"seed{run.seed}"


def copy_logs(run: PlannedRun, spec: Spec, logs_dir: Path | str) -> Path:
    dest = logged_dir(spec, run, logs_dir)
    dest.mkdir(parents=True, exist_ok=True)
    for name in LOG_FILES:
        if (run.output_dir / name).is_file():
            shutil.copyfile(run.output_dir / name, dest / name)
    return dest


def write_done(run: PlannedRun) -> None:
    last = final_record(read_metrics(run.output_dir / "metrics.jsonl"))
    done = {"row": run.row.name, "seed": run.seed, "iteration": last.get("iteration"), "opts": list(run.opts),
            **{k: last[k] for k in ("AP", "AP50", "AP75") if k in last}}
    (run.output_dir / "done.json").write_text(json.dumps(done, indent=1) + "\n")


def take_finished(spec: Spec, run: PlannedRun, logs_dir: Path | str, *, dry_run: bool = False,
                  log: Callable[[str], None] = print) -> bool:
    """Whether ``run`` is finished, in its run folder (its logs are then copied) or in the logs of an earlier
    session (its run folder may be gone)."""
    logged = logged_dir(spec, run, logs_dir)
    if not is_finished(run.output_dir, run.max_iter) and is_finished(logged, run.max_iter):
        check_existing(replace(run, output_dir=logged))
        if dry_run:
            log(f"# finished (logged): {run.label} ({display_path(logged)})")
        return True
    if not is_finished(run.output_dir, run.max_iter):
        return False
    if dry_run:
        log(f"# finished: {run.label} ({display_path(run.output_dir)})")
    else:
        if not (run.output_dir / "done.json").is_file():
            write_done(run)
        copy_logs(run, spec, logs_dir)
    return True


def forget_stale_records(run: PlannedRun) -> None:
    """Before a fresh start (no last.pth): no records from a run that died before its first checkpoint."""
    for name in ("metrics.jsonl", "done.json"):
        (run.output_dir / name).unlink(missing_ok=True)
