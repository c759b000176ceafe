"""``Predictor``: detections for images, files or tensors, from a checkpoint or an exported ONNX file.

    from deploy.predictor import Predictor
    predictor = Predictor("weights/yolof_r50_c5_1x.pth")                 # fused fp32 PyTorch
    predictor = Predictor("weights/yolof_r50_c5_1x.pth", precision="bf16")  # bf16 autocast where the CPU has it
    predictor = Predictor("yolof.onnx", backend="onnxruntime")           # ONNX Runtime, CPU provider
    det = predictor.predict("photo.jpg")             # {"boxes" (N, 4) xyxy, "scores" (N,), "labels" (N,)}
    dets = predictor.predict([bgr_array, rgb_array], input_format=...)  # a list in, a list out

It runs the test transform of ``eval.py`` (``data.pipelines.build_pipeline(cfg.data, is_train=False)``)
and the same folded-BN channels_last model (:func:`models.fuse.prepare_for_inference`).
Each image is run alone (no padding to a batch), so an image's detections do not depend on
what else is in the list. Boxes are in the original image's pixels, as numpy arrays.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Sequence, Union

import cv2
import numpy as np
import torch

from utils.precision import autocast, resolve_precision
from models.detector import INPUT_FORMATS

logger = logging.getLogger(__name__)

BACKENDS = ("pytorch", "onnxruntime")
ImageLike = Union[str, Path, np.ndarray, torch.Tensor]


def resolve_config(checkpoint: dict, config=None, opts: Sequence[str] = ()):
    """The run's config: ``config`` (a Config or a YAML path, + ``opts``), else the one stored in the checkpoint."""
    from config import Config, load_config
    from config.loader import apply_overrides, config_from_dict

    if isinstance(config, Config):
        if opts:
            raise ValueError("opts apply to a YAML config or a checkpoint's config, not to a Config object")
        return config
    if config is not None:
        return load_config(config, list(opts))
    if "config" not in checkpoint:
        raise ValueError("the checkpoint holds no config: pass config=")
    return config_from_dict(apply_overrides(checkpoint["config"], list(opts)))


def read_image(path: Union[str, Path]) -> np.ndarray:
    """BGR uint8 (H, W, 3) from a file; a clear error for a missing or non-image file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: not an image file OpenCV can read")
    return image


def as_hwc_array(image: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    """(H, W, 3) numpy array from an (H, W, 3) array or a (3, H, W) tensor; bad shapes raise naming the problem."""
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"a tensor image must be (3, H, W) channels first, got shape {tuple(image.shape)}")
        image = image.detach().cpu().permute(1, 2, 0).numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected an image path, a numpy array or a tensor, got {type(image).__name__}")
    if image.size == 0:
        raise ValueError(f"empty image array of shape {image.shape}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        raise ValueError(f"grayscale image array of shape {image.shape}: pass a 3-channel BGR or RGB image "
                         "(e.g. cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image array of shape {image.shape}: expected (H, W, 3)")
    if image.dtype != np.uint8:
        image = image.astype(np.float32)  # float 0-255 input; cv2.resize keeps float32
    return image


class Predictor:
    """Detections from a checkpoint (``.pth``; or a :class:`config.Config` for random weights) or an ONNX file.

    Args:
        source: a checkpoint path, an ``.onnx`` file written by ``tools/export_onnx.py`` (backend
            ``onnxruntime``), or a Config (random weights: for timing and complexity only).
        config, opts: override the config stored in the checkpoint (a YAML path or a Config, and
            ``key=value`` overrides).
        device: ``cpu``, ``cuda``, ``cuda:1``... (ONNX Runtime runs on the CPU provider).
        precision: ``fp32``, ``bf16`` (autocast; falls back to fp32 with one log line where the
            CPU has no native bf16) or ``fp16`` (CUDA only).
        backend: ``pytorch`` or ``onnxruntime`` (a checkpoint is exported to a temporary file first).
    """

    def __init__(self, source, *, config=None, opts: Sequence[str] = (), device: Union[str, torch.device] = "cpu",
                 precision: str = "fp32", backend: str = "pytorch"):
        from models import build_model

        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.device = torch.device(device)
        self.backend = backend
        is_onnx = isinstance(source, (str, Path)) and Path(source).suffix == ".onnx"
        if is_onnx and backend != "onnxruntime":
            raise ValueError(f"{source}: an ONNX file runs with backend='onnxruntime'")
        self.cfg, state, self.class_names = self._load(source, config=config, opts=opts, is_onnx=is_onnx)
        self.precision = resolve_precision(precision, self.device if backend == "pytorch" else torch.device("cpu"))
        if backend == "onnxruntime" and self.precision != "fp32":
            raise ValueError(f"backend onnxruntime runs the exported fp32 graph; precision {precision} is not available")
        model = build_model(self.cfg)
        if state is not None:
            model.load_state_dict(state, strict=True)
        self.plain_model = model.eval()  # anchors, box coder and thresholds for every backend
        if backend == "pytorch":
            from models.fuse import prepare_for_inference

            self.model = prepare_for_inference(model.to(self.device))
        else:
            self.session = self._onnx_session(source if is_onnx else None)
        from data.pipelines import build_pipeline

        self.transform = build_pipeline(self.cfg.data, is_train=False)  # data.pipeline's test resize, as eval.py
        if self.class_names is None:
            self.class_names = [str(i) for i in range(self.cfg.model.num_classes)]

    def _load(self, source, *, config, opts, is_onnx):
        """(config, state dict or None, class names or None) from the source."""
        from config import Config
        from engine.checkpoint import load_checkpoint

        if isinstance(source, Config):
            return resolve_config({}, source if config is None else config, opts), None, None
        if is_onnx:
            from deploy.onnx_export import read_metadata

            if not Path(source).is_file():
                raise FileNotFoundError(f"{source}: no such ONNX file")
            meta = read_metadata(source)
            if meta.get("variant") != "raw" or "config" not in meta:
                raise ValueError(f"{source}: not a raw-variant ONNX file from tools/export_onnx.py (no yolof metadata)")
            cfg = resolve_config({"config": meta["config"]}, config, opts)
            return cfg, None, meta.get("class_names")
        ckpt = load_checkpoint(source)
        self._checkpoint_path = source
        return resolve_config(ckpt, config, opts), ckpt["model"], ckpt.get("class_names")

    def _onnx_session(self, onnx_file):
        import onnxruntime as ort

        from config import config_to_dict
        from deploy.onnx_export import export_onnx

        if onnx_file is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="yolof_onnx_")
            onnx_file = export_onnx(self.plain_model, Path(self._tmp.name) / "model.onnx", variant="raw",
                                    metadata={"config": config_to_dict(self.cfg), "class_names": self.class_names})
            logger.info("exported %s to %s for ONNX Runtime", getattr(self, "_checkpoint_path", "the model"), onnx_file)
        return ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])

    # ------------------------------------------------------------------ inference
    def prepare(self, image: ImageLike, input_format: str = "BGR") -> tuple[torch.Tensor, tuple[int, int]]:
        """(the model's input (3, h, w) in its channel order, the original (H, W)) for one image."""
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format must be one of {', '.join(INPUT_FORMATS)}, got {input_format!r}")
        if isinstance(image, (str, Path)):
            image, input_format = read_image(image), "BGR"
        image = as_hwc_array(image)
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
        from models.postprocess import postprocess

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
        from models.detector import flatten_head_output

        if self.backend == "pytorch":
            batch, sizes = self.model.preprocess([x.to(self.device)])
            with autocast(self.device, self.precision):
                cls, deltas, anchors = self.model.forward_features(batch)
            return cls, deltas, anchors, sizes[0]
        cls, reg = (torch.from_numpy(o) for o in self.session.run(None, {"images": x[None].float().numpy()}))
        anchors = self.plain_model.anchor_generator(cls.shape[-2], cls.shape[-1])
        k = self.plain_model.num_classes
        return flatten_head_output(cls, k), flatten_head_output(reg, 4), anchors, tuple(x.shape[-2:])
