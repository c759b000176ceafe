"""Precision: the inference names and bf16 support detection, the autocast contexts of inference and of
training / evaluation (``solver.amp``), and the fp32 region the numerics that need it run in.

bf16 on CPU runs convolutions through oneDNN in bfloat16 only where the CPU has
native bf16 instructions (AVX512_BF16 or AMX_BF16); elsewhere oneDNN emulates it,
slower than fp32. Inference (``resolve_precision``) then falls back to fp32 with one
log line; training with ``solver.amp=bf16`` runs as asked and says in one line that it
will be slow; ``solver.amp=auto`` takes bf16 only where it is native.

Mixed precision covers the convolutional trunk only: box decoding and encoding, the
objectness combination, the matcher's costs, the losses and the post-processing run in
fp32 whatever the autocast state (:func:`fp32`), so that a box centre at x = 1186 px is
not rounded to bf16's 8-px grid there.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch

AMP_MODES = ("none", "fp16", "bf16", "auto")  # solver.amp and eval.py --amp (auto: bf16 where native, else none)

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


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """(whether ``device`` runs bf16 natively, what was found): CUDA compute capability >= 8, or the CPU flags."""
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported(including_emulation=False)
        return ok, f"{torch.cuda.get_device_name(device)} {'supports' if ok else 'does not support'} bf16"
    return cpu_bf16_support()


def resolve_amp(amp: str, device: torch.device) -> str:
    """The ``solver.amp`` mode that will run on ``device``, with one log line saying which and why.

    ``auto`` is bf16 where the device has native bf16, else ``none``. ``bf16`` without native support and
    ``fp16`` on a CPU run as asked (emulated or slow: said in one line).
    """
    if amp == "none":
        return amp
    native, reason = native_bf16(device)
    if amp == "auto":
        amp = "bf16" if native else "none"
        logger.info("solver.amp=auto: %s on %s (%s)", "bf16 autocast" if native else "fp32", device.type, reason)
    elif amp == "bf16" and not native:
        logger.warning("solver.amp=bf16 on a %s without native bf16 (%s): it runs, but slower than fp32",
                       device.type, reason)
    elif amp == "fp16" and device.type == "cpu":
        logger.warning("solver.amp=fp16 on CPU runs, with a GradScaler, but most CPUs have no fast fp16: "
                       "bf16 (or none) is the CPU choice")
    else:
        logger.info("solver.amp=%s: %s autocast on %s", amp, amp, device.type)
    return amp


def amp_context(device: torch.device, amp: str):
    """The autocast of a resolved ``solver.amp`` (``none`` | ``fp16`` | ``bf16``) in the train step and the
    evaluator, on CUDA and CPU alike (``auto`` must go through :func:`resolve_amp` first)."""
    if amp in ("fp16", "bf16"):
        return torch.autocast(device.type, dtype=torch.float16 if amp == "fp16" else torch.bfloat16)
    if amp not in ("none", "fp32"):
        raise ValueError(f"amp mode {amp!r} must be resolved (resolve_amp) before it is used")
    return contextlib.nullcontext()


def fp32(device: torch.device):
    """A region that runs in fp32 whatever the surrounding autocast (its tensors must be cast with ``.float()``);
    a null context on devices without autocast (``meta``: shape-only passes)."""
    if not torch.amp.is_autocast_available(device.type):
        return contextlib.nullcontext()
    return torch.autocast(device.type, enabled=False)
