"""SLURM job options: SLURM's time formats, the checks of a spec's slurm: section and of the flags, and the sbatch
script submitit writes from them."""
from __future__ import annotations

import argparse

import pytest
from submitit.slurm.slurm import _make_sbatch_string

from studies.slurm_options import (SlurmOptionError, SlurmOptions, add_arguments, executor_parameters, layout,
                                   options_from_args, parse_options, parse_time)
from studies.spec import SpecError, load_spec
from tests.studies.specs import write_spec


@pytest.mark.parametrize("text, minutes", [
    ("90", 90), (45, 45), ("1:30", 2), ("0:59", 1), ("2:00:00", 120), ("24:00:00", 1440), ("1-00", 1440),
    ("1-2:30", 1590), ("1-02:30:01", 1591), ("2-00:00:00", 2880)])
def test_slurm_times_in_minutes(text, minutes):
    """sbatch's formats: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS (seconds rounded up to a minute)."""
    assert parse_time(text) == minutes


@pytest.mark.parametrize("text", ["abc", "0", 0, "1:2:3:4", "-5", "1h", True])
def test_bad_times_are_refused(text):
    with pytest.raises(ValueError):
        parse_time(text)


def test_options_are_checked_naming_the_bad_one():
    assert parse_options({"partition": "gpu", "time": "1-00:00:00", "mem": "64G", "setup": "module load cuda"},
                         "here") == {"partition": "gpu", "time": 1440, "mem": "64G", "setup": ("module load cuda",)}
    for data, message in [({"gpu": 8}, "unknown SLURM option 'gpu'; valid options: partition"),
                          ({"nodes": 0}, "SLURM option 'nodes': expected an integer >= 1, got 0"),
                          ({"mem": "lots"}, "SLURM option 'mem'"), ({"partition": "two words"}, "'partition'"),
                          ({"gpus_per_node": -1}, "'gpus_per_node'"), ([1], "expected a mapping")]:
        with pytest.raises(SlurmOptionError, match=message):
            parse_options(data, "here")


def test_flags_override_the_spec_section_and_are_checked():
    p = argparse.ArgumentParser()
    add_arguments(p, "SLURM")
    spec = SlurmOptions(partition="gpu", time=60, nodes=2)
    opts = options_from_args(p.parse_args(["--time", "2:00:00", "--gpus-per-node", "0", "--setup", "a", "--setup",
                                           "b"]), spec)
    assert opts == SlurmOptions(partition="gpu", time=120, nodes=2, gpus_per_node=0, setup=("a", "b"))
    with pytest.raises(SlurmOptionError, match="--max-parallel: expected an integer >= 1"):
        options_from_args(p.parse_args(["--max-parallel", "x"]))


def test_layout_one_gpu_per_process_and_tasks_per_node_only_on_cpus():
    assert layout(SlurmOptions(nodes=2), 8, "x") == 16
    assert layout(SlurmOptions(nodes=1, tasks_per_node=2, gpus_per_node=0), 1, "x") == 2
    with pytest.raises(SlurmOptionError, match="one GPU per process"):
        layout(SlurmOptions(gpus_per_node=4), 8, "x")
    with pytest.raises(SlurmOptionError, match="tasks_per_node 2 needs gpus_per_node 0"):
        layout(SlurmOptions(tasks_per_node=2), 1, "x")


def test_the_spec_slurm_section_is_checked_on_load(tmp_path):
    rows = [{"name": "baseline", "overrides": {}}]
    spec = load_spec(write_spec(tmp_path, rows, slurm={"partition": "gpu", "time": "1-00:00:00", "max_parallel": 4}))
    assert spec.slurm == SlurmOptions(partition="gpu", time=1440, max_parallel=4)
    assert load_spec(write_spec(tmp_path, rows)).slurm == SlurmOptions()
    with pytest.raises(SpecError, match=r"tiny.yaml: spec key 'slurm': unknown SLURM option 'gres'"):
        load_spec(write_spec(tmp_path, rows, slurm={"gres": "gpu:8"}))
    with pytest.raises(SpecError, match="need 'launcher: torchrun'"):
        load_spec(write_spec(tmp_path, rows, slurm={"nodes": 2}))
    with pytest.raises(SpecError, match="one GPU per process"):
        load_spec(write_spec(tmp_path, rows, launcher="torchrun", nproc_per_node=8, slurm={"gpus_per_node": 4}))
    torchrun = load_spec(write_spec(tmp_path, rows, launcher="torchrun", nproc_per_node=8, slurm={"nodes": 2}))
    assert torchrun.processes_per_node == 8 and torchrun.slurm.nodes == 2


def test_the_sbatch_script_submitit_writes_from_the_options(tmp_path):
    """What a cluster receives (submitit's own sbatch writer): a requeueable job in the repository, 90 s of USR2
    warning before the time limit, one GPU per process unless told."""
    opts = SlurmOptions(partition="gpu", account="lab", qos="high", time=1440, nodes=2, cpus_per_task=32, mem="400G",
                        constraint="a100", setup=("module load cuda",))
    params = executor_parameters(opts, processes_per_task=8, job_name="study/base/seed0", chdir="/repo")
    lines = _make_sbatch_string(command="python -m submitit.core._submit F", folder=tmp_path, **params).splitlines()
    for want in ("#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --qos=high", "#SBATCH --time=1440",
                 "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --cpus-per-task=32", "#SBATCH --mem=400G", "#SBATCH --constraint=a100",
                 "#SBATCH --requeue", "#SBATCH --chdir=/repo", "#SBATCH --signal=USR2@90",
                 "#SBATCH --job-name=study/base/seed0", "module load cuda"):
        assert want in lines, want
    cpu = executor_parameters(SlurmOptions(gpus_per_node=0, tasks_per_node=2, max_parallel=3), processes_per_task=1,
                              job_name="j", chdir="/repo")
    text = _make_sbatch_string(command="c", folder=tmp_path, map_count=5, **cpu)
    assert "gpus" not in text and "#SBATCH --ntasks-per-node=2" in text and "#SBATCH --array=0-4%3" in text
