"""``Predictor``: detections for images, files or tensors, from a checkpoint or an exported ONNX file.

    from deploy.predictor import Predictor
    predictor = Predictor("weights/yolof_r50_c5_1x.pth")                 # fused fp32 PyTorch
    predictor = Predictor("weights/yolof_r50_c5_1x.pth", precision="bf16")  # bf16 autocast where the CPU has it
    predictor = Predictor("yolof.onnx", backend="onnxruntime")           # ONNX Runtime, CPU provider
    predictor = Predictor("weights/yolof_r50_c5_1x.pth", backend="openvino")               # OpenVINO fp32
    predictor = Predictor("runs/quickstart/last.pth", backend="openvino", precision="int8")  # NNCF int8, calibrated
    det = predictor.predict("photo.jpg")             # {"boxes" (N, 4) xyxy, "scores" (N,), "labels" (N,)}
    dets = predictor.predict([bgr_array, rgb_array], input_format=...)  # a list in, a list out

It runs the test transform of ``eval.py`` (``data.pipelines.build_pipeline(cfg.data, is_train=False)``)
and the same folded-BN channels_last model (:func:`models.fuse.prepare_for_inference`), or its
exported raw graph on ONNX Runtime / OpenVINO (deploy/backends.py; int8: deploy/quantize.py).
Each image is run alone (no padding to a batch), so an image's detections do not depend on
what else is in the list. Boxes are in the original image's pixels, as numpy arrays.

Pixels: uint8 0-255 as OpenCV reads them, or float 0-255. Arrays that would silently give no
detections are converted with one log line (per kind, per Predictor) or refused:

* float images whose maximum is at most 1 (torchvision's 0-1 convention) are scaled by 255;
* uint16 images (0-65535) are scaled to 0-255;
* 4-channel arrays (BGRA / RGBA, (H, W, 4) or (4, H, W)) drop their alpha channel, as
  ``cv2.imread`` does for files with alpha;
* negative values (already normalised images), values above 255 in other types, and
  non-finite values are refused with an error naming the problem.
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import cv2
import numpy as np
import torch

from config import Config, config_to_dict
from config.loader import config_from_checkpoint
from data.pipelines import build_pipeline
from deploy.backends import BACKENDS, model_file_bytes, resolve_backend_precision, write_openvino_ir
from deploy.onnx_export import export_onnx, read_metadata
from deploy.quantize import CALIBRATION_SIZE, calibration_files, quantize_openvino
from models import build_model
from models.detector import INPUT_FORMATS, flatten_head_output
from models.fuse import prepare_for_inference
from models.postprocess import postprocess
from utils.checkpoint import load_checkpoint
from utils.precision import autocast

logger = logging.getLogger(__name__)

ImageLike = Union[str, Path, np.ndarray, torch.Tensor]


def read_image(path: Union[str, Path]) -> np.ndarray:
    """BGR uint8 (H, W, 3) from a file; a clear error for a missing or non-image file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: not an image file OpenCV can read")
    return image


def as_hwc_array(image: Union[np.ndarray, torch.Tensor]) -> tuple[np.ndarray, Optional[str]]:
    """((H, W, 3) array of 0-255 pixels (uint8 or float32), a note saying how it was converted, or None) from an
    (H, W, 3 | 4) array or a (3 | 4, H, W) tensor; bad shapes and values raise naming the problem."""
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] not in (3, 4):
            raise ValueError(f"a tensor image must be (3, H, W) channels first, got shape {tuple(image.shape)}")
        image = image.detach().cpu().permute(1, 2, 0).numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected an image path, a numpy array or a tensor, got {type(image).__name__}")
    if image.size == 0:
        raise ValueError(f"empty image array of shape {image.shape}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        raise ValueError(f"grayscale image array of shape {image.shape}: pass a 3-channel BGR or RGB image "
                         "(e.g. cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))")
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"image array of shape {image.shape}: expected (H, W, 3), or (H, W, 4) with alpha")
    note = None
    if image.shape[2] == 4:  # BGRA / RGBA: alpha dropped, as cv2.imread(IMREAD_COLOR) does for files
        image, note = image[:, :, :3], "4-channel image: alpha channel dropped"
    pixels, scaled = _to_0_255(image)
    return pixels, "; ".join(n for n in (note, scaled) if n) or None


def _to_0_255(image: np.ndarray) -> tuple[np.ndarray, Optional[str]]:
    """(uint8 as it is, or float32 in 0-255; a note when it was rescaled) from an image array of any numeric type."""
    if image.dtype == np.uint8:
        return image, None
    if image.dtype == np.uint16:
        return image.astype(np.float32) * (255.0 / 65535.0), "uint16 image: scaled from 0-65535 to 0-255"
    if not (np.issubdtype(image.dtype, np.floating) or np.issubdtype(image.dtype, np.integer)):
        raise TypeError(f"image array of dtype {image.dtype}: expected uint8, uint16, or float pixels")
    pixels = image.astype(np.float32)  # cv2.resize keeps float32
    if not np.isfinite(pixels).all():
        raise ValueError("image array holds NaN or infinite values")
    low, high = float(pixels.min()), float(pixels.max())
    if low < 0:
        raise ValueError(f"image array has negative values (min {low:.3g}): pass raw pixels in 0-255 (or 0-1 "
                         "floats), not normalised ones; the model normalises them itself")
    if np.issubdtype(image.dtype, np.floating) and high <= 1.0:
        return pixels * 255.0, "float image with values in [0, 1]: scaled by 255 (the model expects 0-255 pixels)"
    if high > 255:
        raise ValueError(f"{image.dtype} image array with values up to {high:.6g}: expected 0-255 pixels "
                         "(or 0-1 floats, or uint16 0-65535)")
    return pixels, None


class Predictor:
    """Detections from a checkpoint (``.pth``; or a :class:`config.Config` for random weights) or an ONNX file.

    Args:
        source: a checkpoint path, an ``.onnx`` file written by ``tools/export_onnx.py`` (backends
            ``onnxruntime`` and ``openvino``), or a Config (random weights: for timing and complexity only).
        config, opts: override the config stored in the checkpoint (a YAML path or a Config, and
            ``key=value`` overrides).
        device: ``cpu``, ``cuda``, ``cuda:1``... (ONNX Runtime and OpenVINO run on the CPU).
        precision: ``fp32``, ``bf16`` (falls back to fp32 with one log line where the CPU has no native
            bf16), ``fp16`` (PyTorch on CUDA only) or ``int8`` (openvino: a graph quantized by NNCF,
            calibrated on ``calib_size`` images of ``calib``, see deploy/quantize.py). What each backend
            runs: :data:`deploy.backends.BACKENDS`.
        backend: one of :data:`deploy.backends.BACKENDS`: ``pytorch``, ``onnxruntime`` or ``openvino``
            (a checkpoint is exported to ONNX first).
        calib: int8 only: a folder of calibration images (default: the config's training split).
        export_dir: where the exported (and quantized) model files are written (default: a temporary folder).

    After construction, ``export_seconds`` (export + conversion + calibration; None for pytorch),
    ``model_file`` (the file the backend runs; None for pytorch) and ``model_bytes`` (its size on disk,
    or the fused PyTorch weights' size) describe what was built.
    """

    def __init__(self, source, *, config=None, opts: Sequence[str] = (), device: Union[str, torch.device] = "cpu",
                 precision: str = "fp32", backend: str = "pytorch", calib: Optional[Union[str, Path]] = None,
                 calib_size: int = CALIBRATION_SIZE, export_dir: Optional[Union[str, Path]] = None):
        self.device = torch.device(device)
        self.backend = backend
        self.precision = resolve_backend_precision(backend, precision, self.device if backend == "pytorch"
                                                   else torch.device("cpu"))
        is_onnx = isinstance(source, (str, Path)) and Path(source).suffix == ".onnx"
        if is_onnx and BACKENDS[backend].runner is None:
            raise ValueError(f"{source}: an ONNX file runs with backend='onnxruntime' or backend='openvino'")
        self.cfg, state, self.class_names = self._load(source, config=config, opts=opts, is_onnx=is_onnx)
        model = build_model(self.cfg)
        if state is not None:
            model.load_state_dict(state, strict=True)
        self.plain_model = model.eval()  # anchors, box coder and thresholds for every backend

        self.transform = build_pipeline(self.cfg.data, is_train=False)  # data.pipeline's test resize, as eval.py
        if self.class_names is None:
            self.class_names = [str(i) for i in range(self.cfg.model.num_classes)]
        self._notes: set[str] = set()  # input conversions already logged
        self.export_seconds: Optional[float] = None
        self.model_file: Optional[Path] = None
        if backend == "pytorch":
            self.model = prepare_for_inference(model.to(self.device))
            self.model_bytes = sum(t.numel() * t.element_size() for t in self.model.state_dict().values())
        else:
            self.runner = self._build_runner(source if is_onnx else None, calib=calib, calib_size=calib_size,
                                             export_dir=export_dir)

    def _load(self, source, *, config, opts, is_onnx):
        """(config, state dict or None, class names or None) from the source."""

        if isinstance(source, Config):
            return config_from_checkpoint({}, list(opts), config=source if config is None else config), None, None
        if is_onnx:
            if not Path(source).is_file():
                raise FileNotFoundError(f"{source}: no such ONNX file")
            meta = read_metadata(source)
            if meta.get("variant") != "raw" or "config" not in meta:
                raise ValueError(f"{source}: not a raw-variant ONNX file from tools/export_onnx.py (no yolof metadata)")
            cfg = config_from_checkpoint({"config": meta["config"]}, list(opts), config=config, source=str(source))
            return cfg, None, meta.get("class_names")
        ckpt = load_checkpoint(source)
        self._checkpoint_path = source
        return (config_from_checkpoint(ckpt, list(opts), config=config, source=str(source)), ckpt["model"],
                ckpt.get("class_names"))

    def _build_runner(self, onnx_file, *, calib, calib_size: int, export_dir):
        """The backend's runner over its model file: the raw ONNX graph (exported here from a checkpoint),
        converted to OpenVINO IR and / or quantized to int8; sets ``export_seconds``, ``model_file``,
        ``model_bytes``."""

        start = time.perf_counter()
        if export_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="yolof_export_")
            export_dir = self._tmp.name
        folder = Path(export_dir)
        if onnx_file is None:
            onnx_file = export_onnx(self.plain_model, folder / "model.onnx", variant="raw",
                                    metadata={"config": config_to_dict(self.cfg), "class_names": self.class_names})
            logger.info("exported %s to %s", getattr(self, "_checkpoint_path", "the model"), onnx_file)
        if self.precision == "int8":
            inputs = [self.prepare(f)[0][None].float().numpy() for f in calibration_files(self.cfg, calib, calib_size)]
            model_file = quantize_openvino(onnx_file, folder / "model_int8.xml", inputs)
        elif self.backend == "openvino":
            model_file = write_openvino_ir(onnx_file, folder / "model.xml")
        else:
            model_file = Path(onnx_file)
        self.model_file, self.model_bytes = model_file, model_file_bytes(model_file)
        runner = BACKENDS[self.backend].runner(model_file, self.precision, torch.get_num_threads())
        self.export_seconds = time.perf_counter() - start
        return runner

    # ------------------------------------------------------------------ inference
    def prepare(self, image: ImageLike, input_format: str = "BGR") -> tuple[torch.Tensor, tuple[int, int]]:
        """(the model's input (3, h, w) in its channel order, the original (H, W)) for one image."""
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format must be one of {', '.join(INPUT_FORMATS)}, got {input_format!r}")
        if isinstance(image, (str, Path)):
            image, input_format = read_image(image), "BGR"
        image, note = as_hwc_array(image)
        if note and note not in self._notes:  # once per kind of input, not once per video frame
            self._notes.add(note)
            logger.warning("%s", note)
        orig_size = image.shape[:2]
        resized, _ = self.transform(image, {"boxes": np.zeros((0, 4), np.float32)}, np.random.default_rng(0))
        if input_format != self.cfg.model.input_format:
            resized = resized[:, :, ::-1]
        return torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1), orig_size

    @torch.no_grad()
    def predict(self, images: Union[ImageLike, Sequence[ImageLike]], input_format: str = "BGR"):
        """Detections of one image (a dict) or of a list (a list of dicts), in original-image pixels.

        ``input_format``: channel order of arrays and tensors (files are read as BGR).
        Each dict holds numpy ``boxes`` (N, 4) xyxy float32, ``scores`` (N,) and ``labels`` (N,) int64.
        """
        if isinstance(images, (list, tuple)):
            return [self.predict(im, input_format) for im in images]
        x, orig_size = self.prepare(images, input_format)
        cls, deltas, anchors, size = self._forward(x)

        m = self.plain_model
        out = postprocess(cls.float(), deltas.float(), anchors.to(cls.device), box_coder=m.box_coder,
                          image_sizes=[size], output_sizes=[orig_size], score_thresh=m.score_thresh,
                          topk_candidates=m.topk_candidates, nms_thresh=m.nms_thresh,
                          max_detections=m.max_detections)[0]
        return {"boxes": out["boxes"].cpu().numpy(), "scores": out["scores"].cpu().numpy(),
                "labels": out["labels"].cpu().numpy()}

    __call__ = predict

    def _forward(self, x: torch.Tensor):
        """(cls (1, R, K), deltas (1, R, 4), anchors (R, 4), input (h, w)) for one (3, h, w) image."""

        if self.backend == "pytorch":
            batch, sizes = self.model.preprocess([x.to(self.device)])
            with autocast(self.device, self.precision):
                cls, deltas, anchors = self.model.forward_features(batch)
            return cls, deltas, anchors, sizes[0]
        cls, reg = (torch.from_numpy(np.array(o)) for o in self.runner(x[None].float().numpy()))  # a copy
        anchors = self.plain_model.anchor_generator(cls.shape[-2], cls.shape[-1])
        k = self.plain_model.num_classes
        return flatten_head_output(cls, k), flatten_head_output(reg, 4), anchors, tuple(x.shape[-2:])
