"""Run bookkeeping: what a run records about itself (config, command, commit, machine) and the RNG state."""
from __future__ import annotations

import json
import logging
import os
import platform
import random
import shlex
import subprocess
from pathlib import Path

import numpy as np
import torch
import yaml

from config import config_to_dict
from utils.paths import REPO_ROOT

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- run bookkeeping
def git_commit() -> str:
    try:
        root = REPO_ROOT
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else "unknown"
    except Exception:
        return "unknown"


def rng_state() -> dict:
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1].tolist(),
             "python": [version, list(internal), gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`. A checkpoint of a machine with another number of GPUs restores the CUDA states
    that fit (GPU i takes state i), and says so in one line."""
    torch.set_rng_state(state["torch"])
    np.random.seed(0)
    st = np.random.get_state()
    np.random.set_state((st[0], np.array(state["numpy"], dtype=np.uint32), *st[2:]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    _set_cuda_rng_states(list(state.get("cuda") or []))


def _set_cuda_rng_states(saved: list) -> None:
    here = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for i in range(min(len(saved), here)):
        torch.cuda.set_rng_state(saved[i], device=i)
    if saved and len(saved) != here:
        logger.info("the checkpoint holds %d CUDA RNG state(s), this process sees %d GPU(s): restored %d",
                    len(saved), here, min(len(saved), here))


def machine_info() -> dict:
    """What a seed's result depends on besides the code: the CPU model, torch's threads, the accelerator."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "cuda": None}
    if torch.cuda.is_available():
        info["cuda"] = torch.cuda.get_device_name()
    return info


def write_run_info(output_dir: Path, cfg, argv: list[str]) -> None:
    """config.yaml, command.txt (``python train.py ARGS``, rerunnable from the repository root), git_commit.txt and
    machine.json (:func:`machine_info`). ``argv``: train.py's arguments, without the program name."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    (output_dir / "command.txt").write_text(shlex.join(["python", "train.py", *argv]) + "\n")
    (output_dir / "git_commit.txt").write_text(git_commit() + "\n")
    (output_dir / "machine.json").write_text(json.dumps(machine_info(), indent=1) + "\n")


