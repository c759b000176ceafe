"""The inference backends of :class:`deploy.predictor.Predictor`, the precisions each runs, and the runtimes that
run the exported raw graph (deploy/onnx_export.py) outside PyTorch.

===========  ================  ========================================================================
backend      precisions        what runs
===========  ================  ========================================================================
pytorch      fp32, bf16, fp16  the folded-BN channels_last model (bf16: CPU or CUDA autocast; fp16: CUDA)
onnxruntime  fp32              the raw ONNX graph on ONNX Runtime's CPU execution provider
openvino     fp32, bf16, int8  the raw ONNX graph read by OpenVINO's ONNX frontend, on its CPU plugin
===========  ================  ========================================================================

OpenVINO reads the exported ONNX file (``Core.read_model``) rather than converting the PyTorch
module (``openvino.convert_model``): one traced graph serves both runtimes (the ONNX export is
already checked against PyTorch, with dynamic batch, height and width), reading it takes about a
second, and ``convert_model`` would add a second tracing path (and sends usage telemetry unless
opted out). The model is saved as OpenVINO IR (``.xml`` + ``.bin``, weights kept in fp32).

Precisions outside PyTorch: OpenVINO's CPU plugin picks bf16 by itself on CPUs with native bf16,
so fp32 and int8 set ``INFERENCE_PRECISION_HINT`` to f32 explicitly and bf16 sets it to bf16.
int8 is a graph quantized by NNCF for OpenVINO (deploy/quantize.py says why not ONNX Runtime's
quantizer, by measurement). A combination the CPU cannot run natively
says so in one log line: bf16 without AVX512_BF16 / AMX_BF16 then runs in fp32 (emulated bf16 is
slower than fp32), int8 without VNNI / AMX int8 runs int8 anyway (correct, just not faster).

ONNX Runtime and OpenVINO run with ``torch.get_num_threads()`` threads, as PyTorch does, so that
backends are compared at equal threads (``OMP_NUM_THREADS`` sets it for all three).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from utils.precision import PRECISIONS, cpu_bf16_support, cpu_int8_support, resolve_precision

logger = logging.getLogger(__name__)

OUTPUTS = ("cls_logits", "bbox_reg")  # the raw graph's outputs (deploy/onnx_export.py)


def resolve_backend_precision(backend: str, precision: str, device: torch.device) -> str:
    """The precision ``backend`` will run when ``precision`` is asked for: an error for a combination that does not
    exist, one log line for one the CPU cannot run natively (bf16 then runs in fp32, int8 runs anyway)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if backend == "pytorch":
        return resolve_precision(precision, device)
    if precision not in BACKENDS[backend].precisions:
        hint = " (int8: backend openvino)" if precision == "int8" else ""
        raise ValueError(f"backend {backend} runs precision {' or '.join(BACKENDS[backend].precisions)}, "
                         f"not {precision}{hint}")
    if precision == "bf16":
        ok, reason = cpu_bf16_support()
        if not ok:
            logger.warning("bf16 requested but this CPU has no native bf16 (%s): %s runs in fp32", reason, backend)
            return "fp32"
    if precision == "int8":
        ok, reason = cpu_int8_support()
        if not ok:
            logger.warning("int8 requested but this CPU has no int8 dot-product instructions (%s): %s runs int8 "
                           "anyway, emulated with wider instructions and possibly no faster than fp32", reason, backend)
    return precision


def model_file_bytes(path: Union[str, Path]) -> int:
    """Size of a model file on disk; an OpenVINO ``.xml`` counts its ``.bin`` too."""
    path = Path(path)
    size = path.stat().st_size
    if path.suffix == ".xml" and path.with_suffix(".bin").is_file():
        size += path.with_suffix(".bin").stat().st_size
    return size


def write_openvino_ir(onnx_file: Union[str, Path], out: Union[str, Path]) -> Path:
    """The ONNX file ``onnx_file`` as OpenVINO IR ``out`` (``.xml`` + ``.bin``, fp32 weights)."""
    import openvino as ov  # optional

    out = Path(out).with_suffix(".xml")
    ov.save_model(ov.Core().read_model(str(onnx_file)), str(out), compress_to_fp16=False)
    return out


class OnnxRuntimeRunner:
    """An ONNX file on ONNX Runtime's CPU provider: images (1, 3, h, w) float32 0-255 -> (cls_logits, bbox_reg)."""

    def __init__(self, model_file: Union[str, Path], precision: str, threads: int):
        import onnxruntime as ort  # optional

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cls, reg = self.session.run(list(OUTPUTS), {"images": images})
        return cls, reg


class OpenVINORunner:
    """An ONNX file or OpenVINO IR on OpenVINO's CPU plugin, in ``precision`` (fp32, bf16, or int8 for a quantized
    model): images (1, 3, h, w) float32 0-255 -> (cls_logits, bbox_reg)."""

    def __init__(self, model_file: Union[str, Path], precision: str, threads: int):
        import openvino as ov  # optional

        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                  "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        self.compiled = core.compile_model(core.read_model(str(model_file)), "CPU", config)

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.compiled([images])
        return out[OUTPUTS[0]], out[OUTPUTS[1]]


@dataclass(frozen=True)
class Backend:
    precisions: tuple[str, ...]  # what it runs
    runner: Optional[type] = None  # runs the exported raw graph; None: the Predictor runs the PyTorch module


# the backends: read by the Predictor, test.py and tools/benchmark.py
BACKENDS: dict[str, Backend] = {
    "pytorch": Backend(("fp32", "bf16", "fp16")),
    "onnxruntime": Backend(("fp32",), OnnxRuntimeRunner),
    "openvino": Backend(("fp32", "bf16", "int8"), OpenVINORunner),
}
