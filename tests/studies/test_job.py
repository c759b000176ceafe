"""What a SLURM job runs (studies/job.py): the command of each task, and a train.py outcome turned into the job's
(here in a SLURM-like environment of one task; tests/e2e/test_slurm.py runs real jobs)."""
from __future__ import annotations

import os
import signal
import sys
import time

import cloudpickle
import pytest
import submitit

from studies.job import RunFailed, TrainJob, parse_starts, start_line, task_command

ARGV = ["train.py", "--config", "c.yaml", "--output_dir", "runs/x", "--opts", "a=1"]


def test_one_process_runs_train_py_as_the_local_launcher_does():
    assert task_command("py", ARGV, nproc_per_task=0, tasks=1, task=0, first_host="n1", job_id="7",
                        restart=0) == ["py", *ARGV]
    with pytest.raises(ValueError, match="one task"):
        task_command("py", ARGV, nproc_per_task=0, tasks=2, task=0, first_host="n1", job_id="7", restart=0)


def test_torchrun_alone_on_its_node_or_one_agent_per_task_meeting_on_the_first_node():
    alone = task_command("py", ARGV, nproc_per_task=8, tasks=1, task=0, first_host="n1", job_id="7", restart=0)
    assert alone == ["py", "-m", "torch.distributed.run", "--nproc_per_node=8", "--standalone", *ARGV]
    agents = [task_command("py", ARGV, nproc_per_task=8, tasks=4, task=t, first_host="n1", job_id="123456",
                           restart=2, max_restarts=3) for t in range(4)]
    common = ["py", "-m", "torch.distributed.run", "--nproc_per_node=8", "--max-restarts=3", "--nnodes=4",
              "--rdzv-backend=c10d", "--rdzv-endpoint=n1:32856", "--rdzv-id=123456.2"]
    assert agents[0] == [*common, "--rdzv-conf=is_host=true", *ARGV]  # 29400 + 123456 % 10000
    assert all(a == [*common, "--rdzv-conf=is_host=false", *ARGV] for a in agents[1:])


def test_start_lines_count_the_requeues():
    log = "\n".join([start_line(0, 0, 1, ["py", "x"]), "some output", "error: x",
                     start_line(1, 0, 1, ["py", "x"]), "more"])
    assert parse_starts(log) == [0, 1] and parse_starts("nothing") == []


@pytest.fixture
def slurm_env(monkeypatch):
    """The variables of task 0 of a one-task SLURM job, as submitit reads them."""
    for key, value in {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "42", "SLURM_NTASKS": "1", "SLURM_PROCID": "0",
                       "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "1",
                       "SLURM_JOB_NODELIST": "node1", "SLURM_RESTART_COUNT": "1"}.items():
        monkeypatch.setenv(key, value)


def test_a_job_fails_with_train_py_and_ignores_the_time_limit_signal(slurm_env, tmp_path, capfd):
    script = tmp_path / "train.py"
    script.write_text("import os, signal, sys\n"
                      "os.kill(os.getpid(), signal.SIGUSR2)  # SLURM's warning before the time limit: submitit's\n"
                      "sys.exit(int(sys.argv[1]))\n")
    assert TrainJob(["train.py", "0"], cwd=str(tmp_path), python=sys.executable)() == 0
    assert parse_starts(capfd.readouterr().err) == [1]  # SLURM_RESTART_COUNT=1: a requeued job
    with pytest.raises(RunFailed, match="train.py exited with status 2"):
        TrainJob(["train.py", "2", "--output_dir", "runs/x"], cwd=str(tmp_path), python=sys.executable)()
    with pytest.raises(RunFailed, match="its log: runs/x/log.txt"):
        TrainJob(["train.py", "1", "--output_dir", "runs/x"], cwd=str(tmp_path), python=sys.executable)()


def test_the_job_pickles_and_checkpoints_as_itself(tmp_path):
    """submitit pickles the job for sbatch, and at the time limit pickles what checkpoint() gives: the same job."""
    job = TrainJob(ARGV, cwd="/repo", python="py", nproc_per_task=2, max_restarts=1)
    again = cloudpickle.loads(cloudpickle.dumps(job))
    assert vars(again) == vars(job)
    delayed = job.checkpoint()
    assert isinstance(delayed, submitit.helpers.DelayedSubmission) and delayed.function is job


def test_a_job_that_ends_first_takes_train_py_and_its_workers_with_it(slurm_env, tmp_path):
    """At its time limit submitit requeues the job and exits from its signal handler: the launcher (torchrun here:
    a parent with a child) and its workers end too, none left to write beside the requeued job."""
    script = tmp_path / "train.py"
    script.write_text("import subprocess, sys, time\n"
                      "worker = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
                      "open('pids', 'w').write(f'{worker.pid}')\n"
                      "time.sleep(60)\n")

    def handler(signum, frame):  # what submitit's handler ends with
        raise SystemExit(-1)
    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 3.0)
        with pytest.raises(SystemExit):
            TrainJob(["train.py"], cwd=str(tmp_path), python=sys.executable)()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    worker = int((tmp_path / "pids").read_text())
    for _ in range(50):  # reaped by init once killed
        if not _alive(worker):
            break
        time.sleep(0.1)
    assert not _alive(worker)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    return state != "Z"
