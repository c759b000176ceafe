"""SLURM for real: jobs on a one-node cluster of this machine (``bash scripts/local_slurm.sh start``; .ci/run starts
it), submitted through submitit by ``ablate.py --launcher slurm`` and ``train.sh slurm``.

The module's fixture submits everything at once (the node's CPUs run the jobs side by side) while the local launcher
runs the same study here, then requeues two jobs with ``scontrol requeue`` after their first checkpoint:

* study ``tiny``: 2 rows x 2 seeds of the small model, 20 steps each, a checkpoint every 4; the job of
  ``baseline/seed0`` is requeued;
* study ``broken``: two runs that fail at run time, with a user error (a COCO folder without annotations) and
  with ``NonFiniteRunError`` (a learning rate of 1e30, no rollback);
* ``train.sh slurm``: 2 tasks on the one node, one torchrun agent each (gloo), requeued once.

SLURM holds a requeued job for about 2 minutes before it may start again (its EligibleTime); the fixture lifts
that with ``scontrol update StartTime=now`` once the job waits, as an administrator would.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

import ablate
from studies.job import parse_starts
from studies.slurm import queue_states, read_records
from studies.spec import format_value, load_spec
from studies.status import format_status, study_status
from studies.table import render_table
from tests.conftest import REPO
from tests.studies.specs import TINY_DATA

pytestmark = pytest.mark.slow

STEPS = {"solver.max_iter": 20, "solver.steps": [15], "solver.warmup_iters": 2, "train.checkpoint_period_iters": 4,
         "train.eval_period": 0}
SKIP = "no SLURM cluster reachable: start the local one with `bash scripts/local_slurm.sh start`"
TIMING = ("time_s", "epoch_time_s")
DEADLINE_S = 240


def _slurm_conf() -> str:
    if os.environ.get("SLURM_CONF"):
        return os.environ["SLURM_CONF"]
    folder = os.environ.get("LOCAL_SLURM_DIR", os.path.join(tempfile.gettempdir(), "yolof_local_slurm"))
    return os.path.join(folder, "slurm.conf")


def _squeue_state(job_id: str) -> str:
    entry = queue_states([job_id]).get(job_id)
    return entry.state if entry is not None else "GONE"


def _requeue(job_id: str, while_waiting=lambda: None) -> None:
    """``scontrol requeue``; once the job waits again, ``while_waiting()``, then SLURM's hold of a requeued job
    lifted (``StartTime=now``) so that it starts again at once."""
    subprocess.run(["scontrol", "requeue", job_id], check=True, capture_output=True, text=True)
    for _ in range(300):
        if _squeue_state(job_id) == "PENDING":
            while_waiting()
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True,
                           capture_output=True, text=True)
            return
        time.sleep(0.1)
    pytest.fail(f"job {job_id} did not wait again after scontrol requeue ({_squeue_state(job_id)})")


def _write_spec(path: Path, name: str, rows: list, data_root: Path, seeds: list) -> Path:
    spec = {"name": name, "base": str(REPO / "config/small_cpu.yaml"), "seeds": seeds,
            "common": {**TINY_DATA, **STEPS, "data.root": str(data_root)},
            "slurm": {"gpus_per_node": 0, "cpus_per_task": 1, "time": "00:10:00"}, "rows": rows}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _records(folder: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _last_iteration(run: Path) -> int:
    lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").is_file() else []
    return json.loads(lines[-1])["iteration"] if lines else -1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    conf = _slurm_conf()
    if not os.path.isfile(conf):
        pytest.skip(SKIP)
    try:
        p = subprocess.run(["sinfo", "--noheader", "--format=%T"], env={**os.environ, "SLURM_CONF": conf},
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip(SKIP)
    if p.returncode != 0 or not p.stdout.split():
        pytest.skip(SKIP)
    mp = pytest.MonkeyPatch()
    mp.setenv("SLURM_CONF", conf)
    mp.setenv("OMP_NUM_THREADS", "1")  # the jobs (sbatch passes the environment on) and the local runs alike
    yield tmp_path_factory.mktemp("slurm")
    mp.undo()


class Requeuer(threading.Thread):
    """Requeues the job of each target folder as soon as the folder holds its first checkpoint (``last.pth``),
    the job id read from the ``jobs.jsonl`` of its submissions; ``while_waiting[name]()`` runs while it waits."""

    def __init__(self, targets: dict, while_waiting: dict):
        super().__init__(daemon=True)
        self.targets, self.while_waiting = targets, while_waiting  # name -> (run folder, jobs folder, record key)
        self.at: dict[str, int] = {}  # name -> the iteration of the run's last record when requeued
        self.error: Exception | None = None
        self.stop = threading.Event()

    def run(self):
        try:
            while len(self.at) < len(self.targets) and not self.stop.is_set():
                for name, (folder, jobs, key) in self.targets.items():
                    if name not in self.at and (folder / "last.pth").is_file():
                        self.at[name] = _last_iteration(folder)
                        _requeue(read_records(jobs)[key].job_id, self.while_waiting.get(name, lambda: None))
                time.sleep(0.05)
        except Exception as e:  # the test fails with it
            self.error = e


def _main(main, *args) -> str:
    """A command line's main() run in this process (no start-up of its own); its printed output."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main([str(a) for a in args]) == 0, buf.getvalue()
    return buf.getvalue()


@pytest.fixture(scope="module")
def ran(cluster):
    """Everything submitted, two jobs requeued, every job ended and the local study run; what each test reads."""
    tmp = cluster
    rows = [{"name": "baseline", "overrides": {}},
            {"name": "grid", "overrides": {"model.matcher.name": "grid_center"}}]
    tiny = _write_spec(tmp / "tiny.yaml", "tiny", rows, tmp / "synth", [0, 1])
    broken = _write_spec(tmp / "broken.yaml", "broken", [
        {"name": "no_annotations", "overrides": {"data.dataset": "coco", "data.root": str(tmp / "empty")}},
        {"name": "diverges", "overrides": {"solver.base_lr": 1.0e+30, "train.nan_retries": 0}}], tmp / "synth", [0])
    (tmp / "empty").mkdir()
    runs, logs = tmp / "slurm_runs", tmp / "slurm_logs"
    out = {"tiny": tiny, "broken": broken, "runs": runs, "logs": logs, "local_runs": tmp / "local_runs",
           "local_logs": tmp / "local_logs", "ddp": tmp / "ddp"}
    dirs = ("--runs-dir", runs, "--logs-dir", logs)

    def status_waiting():
        spec = load_spec(tiny)
        out["status_waiting"] = format_status(spec, study_status(spec, runs, logs, only=["baseline"]))

    requeuer = Requeuer({"tiny/baseline/seed0": (runs / "tiny" / "baseline" / "seed0", runs / "tiny" / "_slurm",
                                                 "baseline/seed0"),
                         "ddp": (out["ddp"], out["ddp"] / "slurm", str(out["ddp"]))},
                        {"tiny/baseline/seed0": status_waiting})
    requeuer.start()
    out["submitted"] = _main(ablate.main, tiny, "--launcher", "slurm", *dirs)
    local = subprocess.Popen([sys.executable, "ablate.py", str(tiny), "--runs-dir", str(out["local_runs"]),
                              "--logs-dir", str(out["local_logs"]), "--no-table"], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out["again"] = _main(ablate.main, tiny, "--launcher", "slurm", *dirs)
    _main(ablate.main, broken, "--launcher", "slurm", "--max-parallel", "2", *dirs)  # one job array
    train_sh = subprocess.run(
        ["bash", "train.sh", "slurm", "r50_c5", "--gpus-per-node", "0", "--tasks-per-node", "2", "--time", "10",
         "--checkpoint-period", "4", "--opts", *(f"{k}={format_value(v)}" for k, v in {**TINY_DATA, **STEPS}.items()
                                                 if k != "train.checkpoint_period_iters")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "CONFIG": "config/small_cpu.yaml", "OUT": str(out["ddp"]), "DATA": str(tmp / "synth_ddp")})
    assert train_sh.returncode == 0, train_sh.stdout + train_sh.stderr
    out["train_sh"] = train_sh.stdout

    jobs = {f"tiny/{k}": r.job_id for k, r in read_records(runs / "tiny" / "_slurm").items()}
    jobs |= {f"broken/{k}": r.job_id for k, r in read_records(runs / "broken" / "_slurm").items()}
    jobs["ddp"] = read_records(out["ddp"] / "slurm")[str(out["ddp"])].job_id
    out["jobs"] = jobs
    start = time.monotonic()
    while True:
        queue = queue_states(jobs.values())
        if (local.poll() is not None and not requeuer.is_alive()
                and all(not (e := queue.get(j)) or not e.alive for j in jobs.values())):
            break
        if time.monotonic() - start > DEADLINE_S or requeuer.error:
            requeuer.stop.set()
            subprocess.run(["scancel", *jobs.values()])
            local.kill()
            pytest.fail(f"requeue: {requeuer.error}" if requeuer.error else f"not done in {DEADLINE_S} s: {queue}")
        time.sleep(0.5)
    out["requeued_at"] = requeuer.at
    out["local_output"] = local.stdout.read()
    assert local.returncode == 0, out["local_output"][-3000:]
    out["states"] = {name: queue[j].state if j in queue else "GONE" for name, j in jobs.items()}
    out["status_tiny"] = _main(ablate.main, tiny, "--status", *dirs)
    out["status_broken"] = _main(ablate.main, broken, "--status", *dirs)
    out["collect"] = _main(ablate.main, tiny, "--collect", "--no-table", *dirs)
    print("\n".join(f"--- {k}\n{out[k]}" for k in ("status_waiting", "status_tiny", "status_broken")))
    return out


def test_a_study_on_slurm_logs_what_the_local_launcher_logs(ran):
    spec = load_spec(ran["tiny"])
    assert ran["submitted"].count("submitted as job") == 4
    assert ran["again"].count("not submitted again") + ran["again"].count(": done") == 4  # no second job of a run
    assert len((ran["runs"] / "tiny" / "_slurm" / "jobs.jsonl").read_text().splitlines()) == 4
    assert ran["status_tiny"].startswith("tiny: 4 runs: 4 finished, 0 running, 0 pending, 0 failed")
    for row in ("baseline", "grid"):
        for seed in (0, 1):
            local, slurm = (ran[k] / "tiny" / row / f"seed{seed}" for k in ("local_logs", "logs"))
            assert (slurm / "done.json").is_file() and (slurm / "command.txt").read_text() == \
                (local / "command.txt").read_text().replace(str(ran["local_runs"]), str(ran["runs"]))
            records = _records(slurm)
            assert records == _records(local), f"{row}/seed{seed}"  # every record, losses and metrics
            assert records[-1]["iteration"] == 20 and "AP50" in records[-1]
    # the table: identical but for the time column (the wall time of each run)
    local_table, slurm_table = (render_table(spec, ran[k]).splitlines() for k in ("local_logs", "logs"))

    def without_time(lines):
        return [" | ".join(c for i, c in enumerate(line.split(" | ")) if i != 5) if line.startswith("| `") else
                line for line in lines]
    assert without_time(slurm_table) == without_time(local_table)
    assert len([line for line in slurm_table if line.startswith("| `")]) == 2


def test_a_requeued_job_continues_from_its_checkpoint_and_ends_as_an_uninterrupted_run(ran):
    run = ran["runs"] / "tiny" / "baseline" / "seed0"
    job = ran["jobs"]["tiny/baseline/seed0"]
    assert 4 <= ran["requeued_at"]["tiny/baseline/seed0"] <= 20
    log = (run.parent.parent / "_slurm" / f"{job}_0_log.err").read_text()
    assert parse_starts(log) == [0, 1]  # started, requeued once, started again
    assert "holds a run of this config: continuing it from" in (run / "log.txt").read_text()
    assert "resumed from" in (run / "log.txt").read_text()
    assert _records(run) == _records(ran["local_runs"] / "tiny" / "baseline" / "seed0")
    waiting = next(line for line in ran["status_waiting"].splitlines() if "baseline/seed0" in line)
    assert f"pending   job {job} waits (BeginTime), iteration " in waiting
    assert f"baseline/seed0  finished  AP " in ran["status_tiny"] and f"(job {job}, requeued 1x)" in ran["status_tiny"]


def test_a_job_ending_in_a_user_error_is_reported_failed_and_not_requeued(ran):
    lines = ran["status_broken"].splitlines()
    assert lines[0] == "broken: 2 runs: 0 finished, 0 running, 0 pending, 2 failed", ran["status_broken"]
    for seed in (0,):
        missing = next(line for line in lines if f"no_annotations/seed{seed} " in line)
        job = ran["jobs"][f"broken/no_annotations/seed{seed}"]
        assert f"failed    job {job} FAILED: error: COCO annotation file not found: " in missing
        diverged = next(line for line in lines if f"diverges/seed{seed} " in line)
        job = ran["jobs"][f"broken/diverges/seed{seed}"]
        assert "_" in job  # a task of the job array of the two
        assert f"failed    job {job} FAILED: error: stopping at iteration" in diverged and "non-finite loss" in diverged
    for name, job in ran["jobs"].items():
        if name.startswith("broken/"):
            assert ran["states"][name] == "FAILED"
            log = (ran["runs"] / "broken" / "_slurm" / f"{job}_0_log.err").read_text()
            assert parse_starts(log) == [0], name  # one start: not requeued


def test_train_sh_slurm_trains_on_two_tasks_is_requeued_once_and_finishes(ran):
    out = ran["ddp"]
    assert "submitted job" in ran["train_sh"] and "1 node(s) x 2 task(s) x 1 process(es) on CPUs" in ran["train_sh"]
    assert ran["states"]["ddp"] == "COMPLETED" and 4 <= ran["requeued_at"]["ddp"] <= 20
    log = (out / "slurm" / f"{ran['jobs']['ddp']}_0_log.err").read_text()
    assert parse_starts(log) == [0, 1]
    assert "--nnodes=2 --rdzv-backend=c10d" in log  # two torchrun agents met through c10d
    assert "resumed from" in (out / "log.txt").read_text()
    records = _records(out)
    assert records[-1]["iteration"] == 20 and "AP50" in records[-1]
    assert torch.load(out / "last.pth", weights_only=True)["world_size"] == 2
