"""The SLURM launcher: ``ablate.py SPEC --launcher slurm`` submits every unfinished (row, seed) of a study as a
SLURM job through submitit (one job per run, or one job array with ``max_parallel``), and remembers which job
holds which run.

Each job runs the local launcher's command line (:mod:`studies.job`): the same ``train.py`` arguments, so the
logs are the same whichever way a run ran; a requeued job continues its run from ``last.pth``. Everything is
checked before the first ``sbatch`` (the spec, every run's config, the run folders, the job's layout), as for
the local launcher. A run whose last job is still queued or running is not submitted again.

Beside the runs, ``<runs-dir>/<spec>/_slurm/`` holds submitit's files (``<job>_submission.sh``, the pickled job,
``<job>_0_log.out`` / ``<job>_0_log.err``: the job's output, train.py's included) and ``jobs.jsonl``, one line per
submission: the run, its job id, when. (A row name starts with a letter or a digit, so no row is ``_slurm``.)
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import submitit
from submitit.core.utils import FailedJobError, FailedSubmissionError

from studies.job import TrainJob
from studies.logs import forget_stale_records, take_finished
from studies.slurm_options import SlurmOptions, executor_parameters
from studies.spec import (DEFAULT_LOGS_DIR, DEFAULT_RUNS_DIR, REPO, PlannedRun, Spec, SpecError, check_existing,
                          check_job_layout, command, plan_runs, select_runs)
from utils.errors import UserError

JOBS_FOLDER = "_slurm"
# a run longer than its time limit requeues once per limit; submitit's default cap (3) would end a long run
MAX_TIMEOUT_REQUEUES = 1000
# squeue's states of a job that will still run (or runs): the others (COMPLETED, FAILED, CANCELLED, TIMEOUT, ...) end it
RUNNING_STATES = ("RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT")
WAITING_STATES = ("PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "RESV_DEL_HOLD")


class SlurmError(UserError, RuntimeError):
    """SLURM cannot be reached, or it refused a job (the message has sbatch's or squeue's words)."""


@dataclass(frozen=True)
class JobRecord:
    run: str  # row/seedK, or the run folder for tools/submit
    job_id: str  # submitit's: 1234, or 1234_5 for the task of an array
    submitted: str  # local time, ISO 8601
    command: str = ""


@dataclass(frozen=True)
class QueueEntry:
    job_id: str
    state: str  # squeue's %T: PENDING, RUNNING, COMPLETED, FAILED ...
    elapsed: str  # squeue's %M: the time this start of the job has run
    reason: str  # squeue's %r: why it waits (Resources, Priority, BeginTime ...) or None

    @property
    def alive(self) -> bool:
        return self.state in RUNNING_STATES or self.state in WAITING_STATES


def jobs_folder(spec: Spec, runs_dir: Path | str) -> Path:
    return Path(runs_dir) / spec.name / JOBS_FOLDER


def read_records(folder: Path) -> dict[str, JobRecord]:
    """The last submission of every run in ``folder/jobs.jsonl``."""
    path = Path(folder) / "jobs.jsonl"
    if not path.is_file():
        return {}
    records = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = JobRecord(**json.loads(line))
            records[record.run] = record
    return records


def append_records(folder: Path, records: Iterable[JobRecord]) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    with open(Path(folder) / "jobs.jsonl", "a") as f:
        for record in records:
            f.write(json.dumps(asdict(record)) + "\n")


def parse_squeue(text: str) -> dict[str, QueueEntry]:
    """``squeue -o %i|%T|%M|%r`` lines by job id."""
    entries = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4:
            entries[parts[0]] = QueueEntry(*parts)
    return entries


def queue_states(job_ids: Iterable[str]) -> dict[str, QueueEntry]:
    """squeue's view of ``job_ids`` (array tasks one by one; ended jobs while SLURM still lists them). A job SLURM
    no longer lists has ended."""
    job_ids = set(job_ids)
    if not job_ids:
        return {}
    try:
        p = subprocess.run(["squeue", "--me", "--noheader", "--array", "--states=all", "--format=%i|%T|%M|%r"],
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SlurmError(f"squeue failed: {e} (no SLURM client here? for a local cluster: "
                         "bash scripts/local_slurm.sh start)") from None
    if p.returncode != 0:
        raise SlurmError(f"squeue failed: {p.stderr.strip() or p.stdout.strip()}")
    return {k: v for k, v in parse_squeue(p.stdout).items() if k in job_ids}


def make_executor(folder: Path, options: SlurmOptions, *, processes_per_task: int, job_name: str,
                  python: str = sys.executable) -> submitit.SlurmExecutor:
    try:
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=MAX_TIMEOUT_REQUEUES,
                                          python=shlex.quote(python))
    except RuntimeError as e:  # no srun on PATH
        raise SlurmError(f"{e} (for a local cluster: bash scripts/local_slurm.sh start)") from None
    executor.update_parameters(**executor_parameters(options, processes_per_task=processes_per_task,
                                                     job_name=job_name, chdir=str(REPO)))
    return executor


@dataclass(frozen=True)
class Submission:
    run: str  # what jobs.jsonl records it under
    name: str  # the SLURM job name (an array takes the executor's)
    job: TrainJob
    command: str  # the command line, for the record


def submit_jobs(executor: submitit.SlurmExecutor, submissions: Sequence[Submission], *, array: bool,
                folder: Path) -> list[JobRecord]:
    """One sbatch per submission, or one array of them; each job recorded in ``folder/jobs.jsonl`` once SLURM
    has it."""
    records: list[JobRecord] = []
    try:
        if array:
            with executor.batch():
                jobs = [executor.submit(s.job) for s in submissions]
            records = [JobRecord(s.run, str(j.job_id), _now(), s.command) for s, j in zip(submissions, jobs)]
            append_records(folder, records)
        else:
            for s in submissions:
                executor.update_parameters(job_name=s.name)
                record = JobRecord(s.run, str(executor.submit(s.job).job_id), _now(), s.command)
                append_records(folder, [record])
                records.append(record)
    except (FailedJobError, FailedSubmissionError) as e:
        done = f" ({len(records)} submitted before: {', '.join(r.run for r in records)})" if records else ""
        raise SlurmError(f"sbatch refused the job{done}: {str(e).strip()}") from None
    return records


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def _check_batches(spec: Spec, runs: Sequence[PlannedRun], world: int) -> None:
    for run in runs:
        batch, processes = run.config["solver"]["batch_size"], world * (run.accumulate or 1)
        if batch % processes:
            raise SpecError(f"{spec.path}: row '{run.row.name}': solver.batch_size={batch} is not divisible by the "
                            f"job's processes x accumulate = {processes}")


def submit_study(spec: Spec, options: SlurmOptions, runs_dir: Path | str = DEFAULT_RUNS_DIR,
                 logs_dir: Path | str = DEFAULT_LOGS_DIR, *, only: Optional[Sequence[str]] = None,
                 dry_run: bool = False, python: str = sys.executable,
                 log: Callable[[str], None] = print) -> dict[str, str]:
    """Submit every unfinished run of ``spec`` that has no live job; returns ``{"row/seedK": "done" | "queued"
    (its job still queued or running) | "submitted" | "planned" (dry run)}``."""
    runs = select_runs(spec, plan_runs(spec, runs_dir), only)
    for run in runs:
        check_existing(run)
    _check_batches(spec, runs, check_job_layout(options, spec.launcher, spec.nproc_per_node, "--launcher slurm"))
    folder = jobs_folder(spec, runs_dir)
    records = read_records(folder)
    queue = queue_states(r.job_id for r in records.values())
    status: dict[str, str] = {}
    todo: list[tuple[PlannedRun, list[str], bool]] = []
    for run in runs:
        if take_finished(spec, run, logs_dir, dry_run=dry_run, log=log):
            status[run.label] = "done"
            continue
        record = records.get(run.label)
        if record is not None and record.job_id in queue and queue[record.job_id].alive:
            log(f"{run.label}: job {record.job_id} is {queue[record.job_id].state.lower()}, not submitted again")
            status[run.label] = "queued"
            continue
        resume = (run.output_dir / "last.pth").is_file()
        todo.append((run, command(spec, run, resume=resume, python=python), resume))
    nproc = spec.nproc_per_node if spec.launcher == "torchrun" else 0
    submissions = [Submission(run.label, f"{spec.name}/{run.label}",
                              TrainJob(cmd[cmd.index("train.py"):], cwd=str(REPO), python=python,
                                       nproc_per_task=nproc), shlex.join(cmd)) for run, cmd, _ in todo]
    array = options.max_parallel is not None
    if dry_run:
        params = executor_parameters(options, processes_per_task=spec.processes_per_node, job_name=spec.name,
                                     chdir=str(REPO))
        log(f"# sbatch ({'one array' if array else 'one job per run'}): "
            + " ".join(f"{k}={v}" for k, v in params.items() if k not in ("additional_parameters", "job_name")))
        for run, cmd, _ in todo:
            log(shlex.join(["python", *cmd[1:]]))
            status[run.label] = "planned"
        return status
    if not todo:
        return status
    for run, _, resume in todo:
        if not resume:
            forget_stale_records(run)
    executor = make_executor(folder, options, processes_per_task=spec.processes_per_node, job_name=spec.name,
                             python=python)
    for record in submit_jobs(executor, submissions, array=array, folder=folder):
        log(f"{record.run}: submitted as job {record.job_id}")
        status[record.run] = "submitted"
    return status
