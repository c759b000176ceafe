"""What a SLURM job runs: one ``train.py`` command in a subprocess, in every task of the job (submitit pickles a
:class:`TrainJob` and calls it there).

The command is the local launcher's ``train.py ...`` (so a run's logs are the same whichever way it ran), under
torchrun when the run has more than one process: one torchrun agent per task, the agents meeting through c10d
rendezvous on the job's first node (ranks, the restart of every worker when one dies, and the per-attempt
store of :mod:`utils.distributed` are torchrun's, as on one machine; train.py reads no SLURM variable).

Preemption, the time limit and ``scontrol requeue`` end the job and bring it back: the same command runs again and
continues the run from its folder's ``last.pth`` (train.py does this for a folder holding a run of the same config).
SLURM ends a requeued or preempted job by itself; at its time limit, SLURM's USR2 (``--signal``) reaches submitit,
which asks for :meth:`TrainJob.checkpoint` (the same job) and requeues it. A train.py that exits with an error
(status 2: a user error, ``NonFiniteRunError`` included) raises :class:`RunFailed`: the job fails and is not requeued.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from typing import Optional, Sequence

import submitit

RDZV_PORT_BASE = 29400  # torchrun's c10d port; + the job id modulo RDZV_PORT_SPAN keeps jobs on one node apart
RDZV_PORT_SPAN = 10000
START_MARK = "yolof-job start"  # the line each start of a job writes first to its stderr log (studies.status reads it)


class RunFailed(RuntimeError):
    """train.py ended with an error: the job fails (submitit stores the traceback), it is not requeued."""


def start_line(restart: int, task: int, tasks: int, cmd: Sequence[str]) -> str:
    return f"{START_MARK} {restart + 1} (SLURM_RESTART_COUNT={restart}), task {task}/{tasks}: {shlex.join(cmd)}"


def parse_starts(text: str) -> list[int]:
    """The SLURM_RESTART_COUNT of every start recorded in a job's stderr log, in order."""
    return [int(m) for m in re.findall(rf"^{START_MARK} \d+ \(SLURM_RESTART_COUNT=(\d+)\)", text, re.MULTILINE)]


def task_command(python: str, train_argv: Sequence[str], *, nproc_per_task: int, tasks: int, task: int,
                 first_host: str, job_id: str, restart: int, max_restarts: int = 0) -> list[str]:
    """The command of task ``task`` of ``tasks``: ``python train.py ...`` (``nproc_per_task`` 0), torchrun on
    this node alone (one task), or one torchrun agent of ``tasks`` with c10d rendezvous on ``first_host`` (the
    first task hosts its store; an id per start of the job, so that a requeued job never meets its old one)."""
    if nproc_per_task == 0:
        if tasks != 1:
            raise ValueError(f"a plain python run is one task, the job has {tasks}")
        return [python, *train_argv]
    cmd = [python, "-m", "torch.distributed.run", f"--nproc_per_node={nproc_per_task}"]
    if max_restarts:
        cmd.append(f"--max-restarts={max_restarts}")
    if tasks == 1:
        cmd.append("--standalone")  # c10d on a free local port: other jobs on this node use theirs
    else:
        digits = int(re.sub(r"\D", "", job_id) or 0)
        cmd += [f"--nnodes={tasks}", "--rdzv-backend=c10d",
                f"--rdzv-endpoint={first_host}:{RDZV_PORT_BASE + digits % RDZV_PORT_SPAN}",
                f"--rdzv-id={job_id}.{restart}", f"--rdzv-conf=is_host={'true' if task == 0 else 'false'}"]
    return cmd + list(train_argv)


def end_process_group(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM to ``proc``'s process group (torchrun ends its workers on it), then SIGKILL to what is left of the
    group once ``proc`` has ended or after ``grace_s``. Killing torchrun alone would leave its workers running,
    beside the requeued job's, where SLURM does not track processes by cgroup (proctrack/linuxproc loses orphans)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:  # the group has ended
            return
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass


def _ignore_usr2() -> None:
    """In train.py: SLURM's USR2 (time limit near) is for submitit, which requeues the job; by default it would end
    train.py at once."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


class TrainJob(submitit.helpers.Checkpointable):
    """``python train.py ...`` (``train_argv`` starts with ``train.py``) in ``cwd``, in every task of a SLURM job."""

    def __init__(self, train_argv: Sequence[str], *, cwd: str, python: str = sys.executable, nproc_per_task: int = 0,
                 max_restarts: int = 0):
        self.train_argv = list(train_argv)
        self.cwd = cwd
        self.python = python
        self.nproc_per_task = nproc_per_task
        self.max_restarts = max_restarts

    def __call__(self) -> int:
        env = submitit.JobEnvironment()
        restart = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        cmd = task_command(self.python, self.train_argv, nproc_per_task=self.nproc_per_task, tasks=env.num_tasks,
                           task=env.global_rank, first_host=env.hostnames[0],
                           job_id=os.environ.get("SLURM_JOB_ID", str(env.job_id)), restart=restart,
                           max_restarts=self.max_restarts)
        print(start_line(restart, env.global_rank, env.num_tasks, cmd), file=sys.stderr, flush=True)
        proc = subprocess.Popen(cmd, cwd=self.cwd, preexec_fn=_ignore_usr2, start_new_session=True)
        try:
            rc = proc.wait()
        finally:  # the job ends first (submitit requeues it at its time limit and exits): train.py ends with it
            if proc.poll() is None:
                end_process_group(proc)
        if rc != 0:
            raise RunFailed(_failure(rc, self.train_argv))
        return rc

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """The same job again: train.py continues from the run folder's last.pth by itself."""
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _failure(rc: int, train_argv: Sequence[str]) -> str:
    out = _output_dir(train_argv)
    where = f"; its log: {out}/log.txt" if out else ""
    if rc < 0:
        return f"train.py was ended by {signal.Signals(-rc).name}{where}"
    return f"train.py exited with status {rc}{where}"


def _output_dir(train_argv: Sequence[str]) -> Optional[str]:
    for flag in ("--output_dir", "-o"):
        if flag in train_argv[:-1]:
            return train_argv[train_argv.index(flag) + 1]
    return None
