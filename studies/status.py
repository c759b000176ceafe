"""``ablate.py SPEC --status``: one line per run of a study, from its run folder, its committed logs and SLURM:

* finished: its final record's metrics (and its job, with how many times it was requeued);
* running: its job, the iteration of the run's last record, the time this start of the job has run;
* pending: its job waits (SLURM's reason), or it was never submitted (with how far it got, if it started);
* failed: its job ended without finishing the run: the job id, SLURM's state while it still lists the job, and
  the last error line of the job's log (train.py's ``error: ...``, else SLURM's or the last exception's line).

``--watch`` prints it again every ``--interval`` seconds until every run has finished or failed. Only runs with a
job of :mod:`studies.slurm` ask SLURM anything: the status of a study run locally needs no SLURM.
"""
from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from submitit.core.utils import JobPaths

from engine.metrics_log import final_record, read_metrics
from studies.job import START_MARK, parse_starts
from studies.logs import logged_dir
from studies.slurm import JobRecord, QueueEntry, jobs_folder, queue_states, read_records
from studies.spec import DEFAULT_LOGS_DIR, DEFAULT_RUNS_DIR, PlannedRun, Spec, display_path, plan_runs, select_runs

STATES = ("finished", "running", "pending", "failed")
ENDED = ("finished", "failed")
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Failed)\b.*$")


@dataclass(frozen=True)
class RunStatus:
    label: str
    state: str  # one of STATES
    detail: str


def last_error_line(text: str) -> str:
    """The line of a job's stderr log that says why it ended, from its last start on: train.py's ``error: ...``
    line, else SLURM's ``*** JOB ... CANCELLED / DUE TO TIME LIMIT ***``, else the last exception line of a
    traceback (the job wrapper's own ``studies.job.RunFailed`` only when there is no other), else the last line."""
    starts = [m.start() for m in re.finditer(rf"^{START_MARK} ", text, re.MULTILINE)]
    lines = [line.strip() for line in text[starts[-1] if starts else 0:].splitlines()]
    lines = [line for line in lines if line and not line.startswith(START_MARK)]
    for pick in (lambda l: l.startswith("error: "), lambda l: "***" in l and l.startswith("slurmstepd"),
                 lambda l: _EXCEPTION.match(l) and not l.startswith("studies.job."), _EXCEPTION.match):
        found = [line for line in lines if pick(line)]
        if found:
            return found[-1]
    return lines[-1] if lines else "(its log is empty)"


def _metrics(record: dict, keys: Sequence[str]) -> str:
    """The spec's metrics in %, as the table shows them (-1, pycocotools' "undefined", as –)."""
    values = {k: record.get(k) for k in keys}
    return ", ".join(f"{k} {100 * v:.1f}" if isinstance(v, (int, float)) and v >= 0 else f"{k} –"
                     for k, v in values.items())


def _progress(run: PlannedRun) -> Optional[str]:
    records = read_metrics(run.output_dir / "metrics.jsonl")
    return f"iteration {records[-1].get('iteration', '?')}/{run.max_iter}" if records else None


def _job_log(folder: Path, job_id: str) -> str:
    path = JobPaths(folder, job_id=job_id, task_id=0).stderr
    return path.read_text(errors="replace") if path.is_file() else ""


def _job(record: JobRecord, folder: Path) -> str:
    restarts = parse_starts(_job_log(folder, record.job_id))
    requeued = max(restarts) if restarts else 0
    return f"job {record.job_id}" + (f", requeued {requeued}x" if requeued else "")


def run_status(spec: Spec, run: PlannedRun, logs_dir: Path, folder: Path, record: Optional[JobRecord],
               entry: Optional[QueueEntry]) -> RunStatus:
    """The status of one run from its folder, its logs, its last job (``record``) and squeue's line of it."""
    for where, tag in ((run.output_dir, ""), (logged_dir(spec, run, logs_dir), "logged")):
        final = final_record(read_metrics(where / "metrics.jsonl"), run.max_iter)
        if final is not None:
            extra = [x for x in (tag, _job(record, folder) if record and not tag else "") if x]
            return RunStatus(run.label, "finished", _metrics(final, spec.metrics) + (f" ({', '.join(extra)})"
                                                                                      if extra else ""))
    progress = _progress(run)
    if record is None:
        return RunStatus(run.label, "pending", "not submitted" + (f", {progress} so far" if progress else ""))
    if entry is not None and entry.alive:
        if entry.state in ("PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"):
            return RunStatus(run.label, "pending", f"{_job(record, folder)} waits ({entry.reason})"
                             + (f", {progress} so far" if progress else ""))
        return RunStatus(run.label, "running", f"{_job(record, folder)}, {progress or 'starting'}, "
                                               f"{entry.elapsed} in this start")
    state = f" {entry.state}" if entry is not None else ""
    log = JobPaths(folder, job_id=record.job_id, task_id=0).stderr
    why = last_error_line(_job_log(folder, record.job_id)) if log.is_file() else "no log: the job never started"
    return RunStatus(run.label, "failed", f"job {record.job_id}{state}: {why} ({display_path(log)})")


def study_status(spec: Spec, runs_dir: Path | str = DEFAULT_RUNS_DIR, logs_dir: Path | str = DEFAULT_LOGS_DIR, *,
                 only: Optional[Sequence[str]] = None) -> list[RunStatus]:
    runs = select_runs(spec, plan_runs(spec, runs_dir), only)
    folder = jobs_folder(spec, runs_dir)
    records = read_records(folder)
    queue = queue_states(records[r.label].job_id for r in runs if r.label in records)
    out = []
    for run in runs:
        record = records.get(run.label)
        out.append(run_status(spec, run, Path(logs_dir), folder, record,
                              queue.get(record.job_id) if record is not None else None))
    return out


def format_status(spec: Spec, statuses: Sequence[RunStatus]) -> str:
    counts = ", ".join(f"{sum(s.state == state for s in statuses)} {state}" for state in STATES)
    width = max((len(s.label) for s in statuses), default=0)
    lines = [f"{spec.name}: {len(statuses)} runs: {counts}"]
    lines += [f"  {s.label:<{width}}  {s.state:<8}  {s.detail}" for s in statuses]
    return "\n".join(lines)


def watch(spec: Spec, runs_dir: Path | str = DEFAULT_RUNS_DIR, logs_dir: Path | str = DEFAULT_LOGS_DIR, *,
          only: Optional[Sequence[str]] = None, interval: float = 60.0, out: Callable[[str], None] = print,
          sleep: Callable[[float], None] = time.sleep) -> list[RunStatus]:
    """Print the status every ``interval`` seconds until every run has ended; returns the last status."""
    clear = sys.stdout.isatty() and out is print
    while True:
        statuses = study_status(spec, runs_dir, logs_dir, only=only)
        out(("\033[H\033[J" if clear else "") + time.strftime("%H:%M:%S ") + format_status(spec, statuses))
        if all(s.state in ENDED for s in statuses):
            return statuses
        sleep(interval)
