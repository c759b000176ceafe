"""``ablate.py --launcher slurm`` before and around sbatch: every plan-time error stops before anything is submitted,
a run with a live job is not submitted again, each submission is recorded. SLURM's side (sbatch through submitit)
is a recording executor here; tests/e2e/test_slurm.py submits to a real SLURM."""
from __future__ import annotations

import json

import pytest

import ablate
from studies import slurm
from studies.job import TrainJob
from studies.slurm import JobRecord, QueueEntry, append_records, read_records, submit_study
from studies.slurm_options import SlurmOptions
from studies.spec import load_spec, plan_runs
from tests.studies.specs import no_runs, write_spec

ROWS = [{"name": "baseline", "overrides": {}}, {"name": "other", "overrides": {"model.decoder.pred_kernel": 1}}]


class RecordingExecutor:
    """What submit_study asks of submitit's SlurmExecutor: job names, and jobs that get ids."""

    def __init__(self):
        self.submitted: list[tuple[str, TrainJob]] = []
        self.name = None

    def update_parameters(self, job_name):
        self.name = job_name

    def submit(self, job):
        self.submitted.append((self.name, job))
        return type("Job", (), {"job_id": str(100 + len(self.submitted))})()


@pytest.fixture
def executor(monkeypatch):
    made = RecordingExecutor()
    monkeypatch.setattr(slurm, "make_executor", lambda *a, **k: made)
    return made


def _no_sbatch(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("sbatch was reached")
    monkeypatch.setattr(slurm, "make_executor", fail)
    no_runs(monkeypatch)


def test_plan_time_errors_stop_before_anything_is_submitted(tmp_path, monkeypatch, capsys):
    _no_sbatch(monkeypatch)
    runs = tmp_path / "runs"
    args = ["--launcher", "slurm", "--runs-dir", str(runs), "--logs-dir", str(tmp_path / "logs")]
    bad = write_spec(tmp_path, [*ROWS, {"name": "bad", "overrides": {"model.matcher.nam": "x"}}])
    assert ablate.main([str(bad), *args]) == 2
    assert "row 'bad'" in capsys.readouterr().err
    spec = write_spec(tmp_path, ROWS, slurm={"partition": "gpu"})
    assert ablate.main([str(spec), *args, "--time", "soon"]) == 2
    assert "--time: 'soon' is not a SLURM time" in capsys.readouterr().err
    assert ablate.main([str(spec), *args, "--nodes", "2"]) == 2  # a python run is one process
    assert "need 'launcher: torchrun'" in capsys.readouterr().err
    torchrun = write_spec(tmp_path, ROWS, launcher="torchrun", nproc_per_node=2)
    assert ablate.main([str(torchrun), *args, "--nodes", "3"]) == 2  # batch 4 over 6 processes
    assert "solver.batch_size=4 is not divisible by the job's processes x accumulate = 6" in capsys.readouterr().err
    folder = runs / "tiny" / "other" / "seed0"  # a run folder holding another config
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("model: {decoder: {pred_kernel: 3}}\n")
    assert ablate.main([str(spec), *args]) == 2
    assert "was run with a different config" in capsys.readouterr().err
    assert not (runs / "tiny" / "_slurm").exists()


def test_dry_run_prints_the_job_and_the_commands(tmp_path, monkeypatch, capsys):
    _no_sbatch(monkeypatch)
    spec = write_spec(tmp_path, ROWS, slurm={"partition": "gpu", "time": "2:00:00", "gpus_per_node": 0})
    assert ablate.main([str(spec), "--launcher", "slurm", "--max-parallel", "1", "--dry-run", "--runs-dir",
                        str(tmp_path / "runs")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "# sbatch (one array): time=120 nodes=1 ntasks_per_node=1 partition=gpu array_parallelism=1"
    assert len(lines) == 3 and all(line.startswith("python train.py --config ") for line in lines[1:])


def test_submission_records_jobs_and_skips_live_ones(tmp_path, monkeypatch, executor):
    spec = load_spec(write_spec(tmp_path, ROWS, seeds=[0, 1]))
    runs, logs = tmp_path / "runs", tmp_path / "logs"
    planned = {r.label: r for r in plan_runs(spec, runs)}
    stale = planned["other/seed1"].output_dir  # died before its first checkpoint: its records go
    stale.mkdir(parents=True)
    (stale / "metrics.jsonl").write_text('{"type": "iter", "iteration": 1}\n')
    resumed = planned["other/seed0"].output_dir
    resumed.mkdir(parents=True)
    (resumed / "last.pth").write_bytes(b"")
    (resumed / "metrics.jsonl").write_text('{"type": "iter", "iteration": 1}\n')
    folder = runs / "tiny" / "_slurm"
    append_records(folder, [JobRecord("baseline/seed0", "7", "t"), JobRecord("baseline/seed1", "8", "t")])
    queue = {"7": QueueEntry("7", "RUNNING", "1:00", "None"), "8": QueueEntry("8", "FAILED", "0:10", "None")}
    monkeypatch.setattr(slurm, "queue_states", lambda ids: {k: v for k, v in queue.items() if k in set(ids)})
    printed = []
    status = submit_study(spec, SlurmOptions(gpus_per_node=0), runs, logs, python="py", log=printed.append)
    assert status == {"baseline/seed0": "queued", "baseline/seed1": "submitted", "other/seed0": "submitted",
                      "other/seed1": "submitted"}
    assert "baseline/seed0: job 7 is running, not submitted again" in printed
    assert [name for name, _ in executor.submitted] == ["tiny/baseline/seed1", "tiny/other/seed0", "tiny/other/seed1"]
    jobs = {name: job for name, job in executor.submitted}
    assert jobs["tiny/other/seed0"].train_argv[:2] == ["train.py", "--config"]
    assert "--resume" in jobs["tiny/other/seed0"].train_argv and "--resume" not in jobs["tiny/other/seed1"].train_argv
    assert jobs["tiny/other/seed0"].nproc_per_task == 0 and jobs["tiny/other/seed0"].python == "py"
    assert not (stale / "metrics.jsonl").exists() and (resumed / "metrics.jsonl").exists()
    records = read_records(folder)
    assert {k: r.job_id for k, r in records.items()} == {"baseline/seed0": "7", "baseline/seed1": "101",
                                                         "other/seed0": "102", "other/seed1": "103"}
    assert len((folder / "jobs.jsonl").read_text().splitlines()) == 5
    assert json.loads((folder / "jobs.jsonl").read_text().splitlines()[-1])["command"].startswith("py train.py")
