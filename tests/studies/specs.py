"""Tiny specs of the small CPU model for the study tests: 16 synthetic 64-px images, a batch of 4, 2 steps."""
from __future__ import annotations

import subprocess

import yaml

from tests.conftest import REPO

TINY_DATA = {"data.synthetic.num_train": 16, "data.synthetic.num_val": 4, "data.synthetic.image_size": [64, 64],
             "data.train_min_size": [64], "data.train_max_size": 64, "data.test_min_size": 64,
             "data.test_max_size": 64, "solver.batch_size": 4, "solver.reference_batch_size": 4,
             "solver.max_iter": 2, "solver.steps": [1], "solver.warmup_iters": 1, "data.num_workers": 0,
             "model.backbone.width_mult": 0.25, "model.encoder.channels": 32, "model.encoder.mid_channels": 8}


def write_spec(tmp_path, rows, **extra):
    """``tmp_path/tiny.yaml``: spec 'tiny' of ``rows`` on config/small_cpu.yaml, seed 0, the tiny data."""
    data = {"name": "tiny", "base": str(REPO / "config/small_cpu.yaml"), "seeds": [0],
            "common": {**TINY_DATA, "data.root": str(tmp_path / "synth")}, "rows": rows, **extra}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def no_runs(monkeypatch):
    """Any subprocess (a run, an sbatch) fails the test."""
    def fail(*a, **k):
        raise AssertionError(f"a process was started: {a}")
    monkeypatch.setattr(subprocess, "run", fail)


def write_readme(tmp_path):
    path = tmp_path / "README.md"
    path.write_text("# Project\n\nintro\n\n<!-- ablation:tiny:start -->\nold table\n<!-- ablation:tiny:end -->\n"
                    "\nrest\n")
    return path


