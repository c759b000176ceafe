"""``python -m tools.submit`` (``train.sh slurm``): the preflight that runs before sbatch, the job's layout and
batch, the train.py command it runs. tests/e2e/test_slurm.py submits through train.sh to a real SLURM."""
from __future__ import annotations

import pytest

from studies import slurm
from studies.slurm import JobRecord, QueueEntry, append_records
from tests.conftest import REPO
from tools import submit
from utils.errors import UserError

TINY = ["model.backbone.width_mult=0.25", "model.encoder.channels=32", "model.encoder.mid_channels=8"]


@pytest.fixture
def no_sbatch(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("sbatch was reached")
    monkeypatch.setattr(submit, "make_executor", fail)


def _coco(tmp_path):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_train2017.json").write_text("{}")
    (root / "train2017").mkdir()
    return root


def test_dry_run_layout_batch_and_command(tmp_path, capsys, no_sbatch):
    out = tmp_path / "run"
    assert submit.main(["--config", "config/small_cpu.yaml", "--output_dir", str(out), "--data", str(tmp_path / "s"),
                        "--per-gpu", "8", "--nodes", "2", "--partition", "gpu", "--accumulate", "2", "--dry-run",
                        "--opts", *TINY, "solver.base_lr=0.01"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"train.sh slurm: batch 128 = 16 process(es) x 4 images x accumulate 2; new run in {out}"
    assert lines[1].startswith("# sbatch: 2 node(s) x 1 task(s) x 8 process(es) on GPUs: job_name=yolof/run time=1440 "
                               "nodes=2 ntasks_per_node=1 gpus_per_node=8 partition=gpu")
    # train.py's own arguments pass through; the batch is 8 images x 16 processes; the user's --opts come last
    assert lines[2] == (f"python train.py --config config/small_cpu.yaml --output_dir {out} --accumulate 2 "
                        f"--no_progress --opts data.root={tmp_path / 's'} train.checkpoint_period_iters=500 "
                        f"solver.batch_size=128 {' '.join(TINY)} solver.base_lr=0.01")
    assert not out.exists()


def test_preflight_stops_before_sbatch(tmp_path, no_sbatch):
    base = ["--output_dir", str(tmp_path / "run"), "--gpus-per-node", "8"]
    with pytest.raises(UserError, match="annotations/instances_train2017.json not found"):
        submit.main(["--config", "config/yolof_r50_c5_1x.yaml", "--data", str(tmp_path / "nothing"), *base,
                     "--opts", *TINY, "model.backbone.weights=none"])
    missing = tmp_path / "weights" / "R-50.pkl"  # the ImageNet file the preset starts from, not there
    with pytest.raises(UserError, match=str(missing)):
        submit.main(["--config", "config/yolof_r50_c5_1x.yaml", "--data", str(_coco(tmp_path)), *base,
                     "--opts", f"model.backbone.weights={missing}"])
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("model: {decoder: {pred_kernel: 1}}\n")
    (tmp_path / "run" / "last.pth").write_bytes(b"x")
    with pytest.raises(UserError, match="already holds another config"):
        submit.main(["--config", "config/small_cpu.yaml", *base, "--opts", *TINY])
    with pytest.raises(UserError, match="--max-parallel is for studies"):
        submit.main(["--config", "config/small_cpu.yaml", *base, "--max-parallel", "2"])
    with pytest.raises(UserError, match="tasks_per_node 2 needs gpus_per_node 0"):
        submit.main(["--config", "config/small_cpu.yaml", *base, "--tasks-per-node", "2"])


def test_a_run_with_a_live_job_is_not_submitted_twice(tmp_path, monkeypatch, no_sbatch):
    out = tmp_path / "run"
    append_records(out / "slurm", [JobRecord(str(out), "55", "t")])
    monkeypatch.setattr(submit, "queue_states", lambda ids: {"55": QueueEntry("55", "PENDING", "0:00", "Priority")})
    with pytest.raises(UserError, match=r"already trained by job 55 \(pending\): wait for it, or end it with scancel"):
        submit.main(["--config", "config/small_cpu.yaml", "--output_dir", str(out), "--opts", *TINY])
    assert slurm.read_records(out / "slurm")[str(out)].job_id == "55"
    assert (REPO / "train.sh").read_text().count("-m tools.submit") == 1
