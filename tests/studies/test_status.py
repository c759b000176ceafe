"""``ablate.py --status``: the line of each run from its folder, its committed logs, its job's record, squeue's line
and the job's log (hand-written here; tests/e2e/test_slurm.py reads real ones)."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

import ablate
from studies import status as status_module
from studies.job import start_line
from studies.slurm import JobRecord, QueueEntry, append_records, jobs_folder, parse_squeue
from studies.spec import load_spec, plan_runs
from studies.status import RunStatus, format_status, last_error_line, run_status, study_status, watch
from tests.studies.specs import write_spec

TRACEBACK = """Traceback (most recent call last):
  File "train.py", line 3, in <module>
RuntimeError: CUDA error: an illegal memory access was encountered
Traceback (most recent call last):
  File "studies/job.py", line 90, in __call__
studies.job.RunFailed: train.py exited with status 1; its log: runs/x/log.txt
srun: error: node1: task 0: Exited with exit code 1
"""


def test_the_line_that_says_why_a_job_ended():
    first = start_line(0, 0, 1, ["py", "train.py"])
    user = (f"{first}\n12:00:01 INFO engine.trainer: new run\nerror: COCO annotation file not found: x.json\n"
            "Traceback (most recent call last):\nstudies.job.RunFailed: train.py exited with status 2\n"
            "srun: error: node1: task 0: Exited with exit code 1\n")
    assert last_error_line(user) == "error: COCO annotation file not found: x.json"
    assert last_error_line(TRACEBACK) == "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert last_error_line("studies.job.RunFailed: train.py was ended by SIGKILL\n") == \
        "studies.job.RunFailed: train.py was ended by SIGKILL"
    cancelled = "slurmstepd-n1: error: *** JOB 5 ON n1 CANCELLED AT 2026-01-01T00:00:00 DUE TO TIME LIMIT ***"
    assert last_error_line(f"{first}\nerror: an old error\n{start_line(1, 0, 1, ['py'])}\nstep 3\n{cancelled}\n"
                           "studies.job.RunFailed: train.py was ended by SIGTERM\n") == cancelled
    assert last_error_line("") == "(its log is empty)" and last_error_line("just this\n\n") == "just this"


def test_squeue_lines():
    assert parse_squeue("12|RUNNING|1:02|None\n13_4|PENDING|0:00|BeginTime\nnoise\n") == {
        "12": QueueEntry("12", "RUNNING", "1:02", "None"), "13_4": QueueEntry("13_4", "PENDING", "0:00", "BeginTime")}
    assert QueueEntry("1", "REQUEUED", "0:00", "x").alive and not QueueEntry("1", "TIMEOUT", "1:00", "x").alive


@pytest.fixture
def study(tmp_path):
    rows = [{"name": "baseline", "overrides": {}}, {"name": "other", "overrides": {"model.decoder.pred_kernel": 1}}]
    spec = load_spec(write_spec(tmp_path, rows, seeds=[0, 1], metrics=["AP50", "APs"]))
    runs = {r.label: r for r in plan_runs(spec, tmp_path / "runs")}
    return spec, runs, tmp_path / "logs", jobs_folder(spec, tmp_path / "runs")


def _records(folder, *records):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_each_state_of_a_run(study):
    spec, runs, logs, jobs = study
    run = runs["baseline/seed0"]
    final = {"iteration": run.max_iter, "time_s": 9.0, "AP": 0.3, "AP50": 0.5, "APs": 0.25}
    record = JobRecord("baseline/seed0", "71", "2026-01-01T00:00:00")
    (jobs / "71_0_log.err").parent.mkdir(parents=True)
    (jobs / "71_0_log.err").write_text(f"{start_line(0, 0, 1, ['py'])}\nx\n{start_line(1, 0, 1, ['py'])}\n")
    running = QueueEntry("71", "RUNNING", "3:05", "None")

    assert run_status(spec, run, logs, jobs, None, None) == RunStatus("baseline/seed0", "pending", "not submitted")
    _records(run.output_dir, {"type": "iter", "iteration": 1})
    assert run_status(spec, run, logs, jobs, record, running).detail == \
        "job 71, requeued 1x, iteration 1/2, 3:05 in this start"
    waiting = replace(running, state="PENDING", reason="BeginTime")
    assert run_status(spec, run, logs, jobs, record, waiting) == \
        RunStatus("baseline/seed0", "pending", "job 71, requeued 1x waits (BeginTime), iteration 1/2 so far")
    assert run_status(spec, run, logs, jobs, None, None).detail == "not submitted, iteration 1/2 so far"
    # the job ended (squeue no longer lists it, or lists it as ended) without the run's final record
    (jobs / "71_0_log.err").write_text(f"{start_line(0, 0, 1, ['py'])}\nerror: data.root: no such folder\n")
    failed = run_status(spec, run, logs, jobs, record, None)
    assert failed.state == "failed" and failed.detail.startswith("job 71: error: data.root: no such folder (")
    assert run_status(spec, run, logs, jobs, record, replace(running, state="FAILED")).detail.startswith(
        "job 71 FAILED: error: data.root")
    # finished in its folder (the job's line kept), or only in the committed logs of another session
    _records(run.output_dir, {"type": "iter", "iteration": 1}, final)
    assert run_status(spec, run, logs, jobs, record, None) == \
        RunStatus("baseline/seed0", "finished", "AP50 50.0, APs 25.0 (job 71)")
    other = runs["other/seed1"]
    _records(logs / "tiny" / "other" / "seed1", {**final, "APs": -1.0})
    assert run_status(spec, other, logs, jobs, None, None).detail == "AP50 50.0, APs – (logged)"


def test_study_status_asks_squeue_only_for_the_jobs_it_launched(study, monkeypatch, capsys):
    spec, runs, logs, jobs = study
    asked = []

    def queue(ids):
        asked.append(sorted(ids))
        return {"8": QueueEntry("8", "RUNNING", "0:10", "None"), "9": QueueEntry("9", "PENDING", "0:00", "Priority")}
    monkeypatch.setattr(status_module, "queue_states", queue)
    append_records(jobs, [JobRecord("baseline/seed1", "7", "t"), JobRecord("other/seed0", "8", "t")])
    append_records(jobs, [JobRecord("baseline/seed1", "9", "t")])  # submitted again: the last job counts
    statuses = study_status(spec, runs["baseline/seed0"].output_dir.parents[2], logs)
    assert asked == [["8", "9"]]
    assert [(s.label, s.state) for s in statuses] == [
        ("baseline/seed0", "pending"), ("baseline/seed1", "pending"), ("other/seed0", "running"),
        ("other/seed1", "pending")]
    text = format_status(spec, statuses)
    assert text.splitlines() == [
        "tiny: 4 runs: 0 finished, 1 running, 3 pending, 0 failed",
        "  baseline/seed0  pending   not submitted",
        "  baseline/seed1  pending   job 9 waits (Priority)",
        "  other/seed0     running   job 8, starting, 0:10 in this start",
        "  other/seed1     pending   not submitted"]
    assert ablate.main([str(spec.path), "--status", "--runs-dir", str(jobs.parents[1]), "--logs-dir",
                        str(logs)]) == 0
    assert capsys.readouterr().out == text + "\n"


def test_watch_prints_until_every_run_has_ended(study, monkeypatch):
    spec, runs, logs, jobs = study
    rounds = iter([[RunStatus("a", "running", "")], [RunStatus("a", "running", "")],
                   [RunStatus("a", "failed", "job 1: error: x")]])
    monkeypatch.setattr(status_module, "study_status", lambda *a, **k: next(rounds))
    printed, slept = [], []
    last = watch(spec, jobs, logs, interval=5, out=printed.append, sleep=slept.append)
    assert last == [RunStatus("a", "failed", "job 1: error: x")] and slept == [5, 5] and len(printed) == 3
    assert printed[-1].endswith("tiny: 1 runs: 0 finished, 0 running, 0 pending, 1 failed\n"
                                "  a  failed    job 1: error: x")
