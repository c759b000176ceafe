"""int8 post-training quantization of the exported raw graph for OpenVINO, with NNCF, calibrated on training images.

    files = calibration_files(cfg, folder=None, n=100)    # N images of the config's training split (or a folder)
    inputs = [predictor.prepare(f)[0][None].float().numpy() for f in files]   # the test transform, as at inference
    quantize_openvino("model.onnx", "model_int8.xml", inputs)                  # OpenVINO IR with int8 convolutions

NNCF inserts int8 quantize / dequantize pairs on the convolutions' inputs and weights
(per-channel weights; ``preset=MIXED``: asymmetric activations, which keep the 0-255 input
and the ReLU outputs in range), calibrates their ranges on the given inputs and corrects the
biases. The box-regression and objectness convolutions (:data:`KEEP_FLOAT`) stay in fp32
(on the quickstart model AP 33.70 kept, 33.67 quantized; kept: it costs nothing measurable).

Why NNCF + OpenVINO and not ONNX Runtime's ``quantize_static`` (bench/bench_quantizers.py, numbers in
docs/deployment.md): on R50-C5 at 800x1216 (1 thread) NNCF's OpenVINO model ran in 172 ms, against
260 ms for the best ``quantize_static`` model on OpenVINO and 474 ms on ONNX Runtime (NNCF's ONNX model
on ONNX Runtime: 549 ms); on the quickstart model it lost the least AP (-0.3 against -0.8 to -1.4), on
the tiny test model 0.1-0.4 AP more than ``quantize_static``. ``quantize_static`` with its defaults
also quantizes the element-wise ops of the objectness combination, which destroyed the quickstart
model (AP 34.0 -> 0.1). So int8 is an OpenVINO precision; ONNX Runtime runs fp32.

OpenVINO and NNCF send anonymous usage telemetry unless opted out (docs/deployment.md says how).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from data.build import build_dataset
from data.transforms import Compose

logger = logging.getLogger(__name__)

CALIBRATION_SIZE = 100  # images, the default of --calib_size
KEEP_FLOAT = r".*decoder/(bbox_pred|object_pred)/.*"  # box-regression and objectness convs stay fp32
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def calibration_files(cfg, folder: Optional[Union[str, Path]] = None, n: int = CALIBRATION_SIZE) -> list[Path]:
    """``n`` image files spread evenly over ``folder`` (sorted), else over the config's training split."""
    if n < 1:
        raise ValueError(f"calibration needs at least one image, got calib_size={n}")
    if folder is not None:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"calibration folder {folder}: no such folder")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise ValueError(f"calibration folder {folder}: no images ({', '.join(IMAGE_EXTS)})")
    else:
        dataset = build_dataset(cfg, cfg.data.train_split, is_train=False, transforms=Compose([]))
        files = [Path(dataset.get_file_name(i)) for i in range(len(dataset))]
        if not files:
            raise ValueError(f"calibration: the training split {cfg.data.train_split!r} of {cfg.data.root} is empty")
    picked = [files[i * len(files) // min(n, len(files))] for i in range(min(n, len(files)))]
    logger.info("int8 calibration on %d images from %s", len(picked), folder or f"split {cfg.data.train_split}")
    return picked


def quantize_openvino(onnx_file: Union[str, Path], out: Union[str, Path], inputs: Sequence[np.ndarray]) -> Path:
    """The raw ONNX graph ``onnx_file`` quantized to int8 by NNCF, calibrated on ``inputs`` (each (1, 3, h, w)
    float32 0-255, after the test transform), written as OpenVINO IR ``out`` (.xml + .bin)."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # NNCF's import: "No CUDA runtime"
    import nncf  # optional, heavy
    import openvino as ov  # optional

    nncf.set_log_level(logging.WARNING)
    model = nncf.quantize(ov.Core().read_model(str(onnx_file)), nncf.Dataset(list(inputs)),
                          preset=nncf.QuantizationPreset.MIXED, subset_size=len(inputs),
                          ignored_scope=nncf.IgnoredScope(patterns=[KEEP_FLOAT], validate=False))
    out = Path(out).with_suffix(".xml")
    ov.save_model(model, str(out), compress_to_fp16=False)
    logger.info("quantized %s to int8 with NNCF: %s", onnx_file, out)
    return out
