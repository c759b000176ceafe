"""The local launcher: the unfinished runs of a study one after the other on this machine, each its own process.

``--collect`` launches nothing and only gathers the runs that finished elsewhere (started by hand from the
``--dry-run`` lines, or by :mod:`studies.slurm`); ``--dry-run`` prints the command lines.
"""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from studies.logs import copy_logs, forget_stale_records, is_finished, take_finished, write_done
from studies.spec import (DEFAULT_LOGS_DIR, DEFAULT_RUNS_DIR, REPO, PlannedRun, Spec, check_existing, command,
                          display_path, plan_runs, select_runs)


def _launch(spec: Spec, run: PlannedRun, cmd: list[str], *, logs_dir: Path | str, resume: bool,
            log: Callable[[str], None], progress: str) -> Optional[str]:
    """Run ``cmd``; None when the run finished (its logs copied), else why it failed."""
    if not resume:
        forget_stale_records(run)
    log(f"{progress} {run.label}{' (resumed)' if resume else ''}: {shlex.join(cmd)}")
    rc = subprocess.run(cmd, cwd=REPO).returncode
    if rc != 0 or not is_finished(run.output_dir, run.max_iter):
        reason = f"exit status {rc}" if rc != 0 else "no evaluated record at the last iteration"
        return f"run {run.label} failed ({reason}); see {display_path(run.output_dir / 'log.txt')}"
    write_done(run)
    copy_logs(run, spec, logs_dir)
    return None


def run_ablation(spec: Spec, runs_dir: Path | str = DEFAULT_RUNS_DIR, logs_dir: Path | str = DEFAULT_LOGS_DIR, *,
                 only: Optional[Sequence[str]] = None, dry_run: bool = False, keep_going: bool = False,
                 python: str = sys.executable, log: Callable[[str], None] = print,
                 collect: bool = False) -> dict[str, str]:
    """Run every unfinished (row, seed) of ``spec``; returns ``{"row/seedK": "done" | "ran" | "failed" | "planned"}``.

    ``collect``: launch nothing; copy the logs of the runs that finished (e.g. ones started by hand or on a
    cluster from the ``dry_run`` command lines) and report the others as ``"pending"``.
    """
    runs = select_runs(spec, plan_runs(spec, runs_dir), only)
    for run in runs:
        check_existing(run)
    status: dict[str, str] = {}
    failures = []
    for i, run in enumerate(runs, 1):
        if take_finished(spec, run, logs_dir, dry_run=dry_run, log=log):
            status[run.label] = "done"
            continue
        if collect:
            status[run.label] = "pending"
            continue
        resume = (run.output_dir / "last.pth").is_file()
        cmd = command(spec, run, resume=resume, python="python" if dry_run else python)  # dry-run: portable lines
        if dry_run:
            log(shlex.join(cmd))
            status[run.label] = "planned"
            continue
        failure = _launch(spec, run, cmd, logs_dir=logs_dir, resume=resume, log=log,
                          progress=f"[{spec.name} {i}/{len(runs)}]")
        if failure is not None and not keep_going:
            raise RuntimeError(failure)
        if failure is not None:
            log(failure)
            failures.append(run.label)
        status[run.label] = "ran" if failure is None else "failed"
    if failures:
        raise RuntimeError(f"{len(failures)} run(s) failed: {', '.join(failures)}")
    return status
