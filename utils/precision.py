"""Precision: the inference names and bf16 support detection, the autocast contexts of inference and of
training / evaluation (``train.amp``).

bf16 on CPU runs convolutions through oneDNN in bfloat16 only where the CPU has
native bf16 instructions (AVX512_BF16 or AMX_BF16); elsewhere oneDNN emulates it,
slower than fp32. So bf16 is used only where those instructions exist, and
otherwise the program says so in one log line and runs in fp32.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch

AMP_MODES = ("none", "fp16", "bf16")  # solver.amp and eval.py --amp (CUDA autocast)

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16", "int8")  # fp16: CUDA only; int8: a quantized graph (openvino)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
INT8_CPU_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # int8 dot-product instructions


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (None where there is none: not Linux)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return None
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _cpu_support(wanted: tuple[str, ...], capability_hint: str) -> tuple[bool, str]:
    """(whether the CPU has one of the ``wanted`` flags, a short reason that says what was found)."""
    capability = torch.backends.cpu.get_cpu_capability()
    flags = cpu_flags()
    if flags is not None:
        found = [f for f in wanted if f in flags]
        if found:
            return True, f"CPU flags {', '.join(found)}"
        return False, f"torch CPU capability {capability}, no {' / '.join(wanted)} flag in /proc/cpuinfo"
    if capability_hint in capability:  # no /proc/cpuinfo (not Linux): trust torch's dispatch level
        return True, f"torch CPU capability {capability}"
    return False, f"torch CPU capability {capability}"


def cpu_bf16_support() -> tuple[bool, str]:
    """(whether this CPU has native bf16 instructions, a short reason that says what was found)."""
    return _cpu_support(BF16_CPU_FLAGS, "AMX")


def cpu_int8_support() -> tuple[bool, str]:
    """(whether this CPU has int8 dot-product instructions (VNNI / AMX), a short reason that says what was found).

    int8 (a graph quantized for OpenVINO, deploy/quantize.py) is fast with them; without them it still runs
    (wider int8 arithmetic, often no faster than fp32), after one log line saying so (deploy/backends.py).
    """
    return _cpu_support(INT8_CPU_FLAGS, "AVX512")


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision PyTorch will actually run: bf16 falls back to fp32 (with one log line) where unsupported."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "int8":
        raise ValueError("precision int8 is a quantized graph: use backend openvino")
    if device.type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            logger.warning("bf16 requested but this GPU does not support it: running in fp32")
            return "fp32"
        return precision
    if precision == "fp16":
        raise ValueError("precision fp16 needs a CUDA device; on CPU use bf16 or fp32")
    if precision == "bf16":
        ok, reason = cpu_bf16_support()
        if not ok:
            logger.warning("bf16 requested but this CPU has no native bf16 (%s): running in fp32", reason)
            return "fp32"
    return precision


def autocast(device: torch.device, precision: str):
    """``torch.autocast`` for ``precision`` on ``device`` (a null context for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def amp_context(device: torch.device, amp: str):
    """The autocast of ``train.amp`` (``none`` | ``fp16`` | ``bf16``) in the train step and the evaluator: CUDA only."""
    if device.type == "cuda" and amp in ("fp16", "bf16"):
        return torch.autocast("cuda", dtype=torch.float16 if amp == "fp16" else torch.bfloat16)
    return contextlib.nullcontext()
