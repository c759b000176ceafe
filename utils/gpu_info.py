"""Why a machine's GPUs are not usable by this PyTorch, in one line: no driver, a CPU-only torch, or a torch built
for a newer CUDA than the driver supports (the usual cause on a cluster node with its own driver)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Optional

import torch


def _nvidia_smi(*args: str) -> Optional[str]:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def driver_gpus() -> list[str]:
    """The GPUs the driver shows (``nvidia-smi``), by name; empty without a driver."""
    out = _nvidia_smi("--query-gpu=name", "--format=csv,noheader")
    return [line.strip() for line in (out or "").splitlines() if line.strip()]


def driver_versions() -> tuple[Optional[str], Optional[str]]:
    """(driver version, the newest CUDA version the driver supports), from ``nvidia-smi``'s header."""
    out = _nvidia_smi() or ""
    driver = re.search(r"Driver Version:\s*([\d.]+)", out)
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", out)
    return (driver.group(1) if driver else None), (cuda.group(1) if cuda else None)


def visible_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def why_no_cuda() -> str:
    """Why ``torch.cuda.is_available()`` is False here, naming the versions that disagree."""
    gpus = driver_gpus()
    if torch.version.cuda is None:
        where = f" (the driver shows {len(gpus)} GPU(s))" if gpus else ""
        return f"this torch {torch.__version__} is a CPU-only build{where}"
    if not gpus:
        smi = "found no GPU" if shutil.which("nvidia-smi") else "not found"
        return (f"no NVIDIA GPU visible (nvidia-smi {smi}); torch {torch.__version__} is built for "
                f"CUDA {torch.version.cuda}")
    driver, driver_cuda = driver_versions()
    return (f"nvidia-smi shows {len(gpus)} GPU(s) ({gpus[0]}), but torch {torch.__version__} cannot use them: it is "
            f"built for CUDA {torch.version.cuda} and the driver {driver or '?'} supports CUDA up to "
            f"{driver_cuda or '?'} (install a torch built for the driver's CUDA, or update the driver)"
            + (f"; CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r}" if "CUDA_VISIBLE_DEVICES" in os.environ
               else ""))
