"""ImageNet backbone weights in the formats the official recipes start from.

``load_backbone_weights(model_or_backbone, path)`` is the one entry point. It
dispatches on the file format:

* **Detectron / Caffe2 model-zoo pickles** (``R-50.pkl``, ``R-101.pkl``,
  ``X-101-64x4d.pkl``, the official ``MODEL.WEIGHTS``): a dict of numpy arrays
  under Caffe2 names, with or without a ``blobs`` level, written by Python 2.
  They are read by :func:`utils.checkpoint.read_pickle` (numpy arrays and builtin
  containers only; anything else is refused before its code runs), and the names
  are mapped to torchvision's (``res2_0_branch2a_w`` -> ``layer1.0.conv1.weight``).
  BN blobs are affine only (``_s``, ``_b``); as in the official FrozenBatchNorm the
  running mean becomes 0 and the running var ``1 - eps``, so a frozen norm
  computes exactly ``s * x + b``.
* **PyTorch state dicts** (``.pth``/``.pt``: torchvision ResNets, the official
  ``cspdarknet53.pth``): ``torch.load(weights_only=True)``, names as the
  backbone's own (a ``backbone.`` / ``module.`` prefix is stripped).

Every tensor's shape is checked and a mismatch names the key; every backbone
entry must be filled; names of the file that the backbone does not use are
reported (``conv1_b``, ``fc1000_*``, the ``_momentum`` twins, classifier heads).

:data:`config.imagenet.IMAGENET_FILES` lists the files the presets name, with where they are
published and the model settings they need (the config checks the fit when it loads).
"""
from __future__ import annotations

import io
import logging
import pickle
import re
from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np
import torch
from torch import nn

from config.imagenet import IMAGENET_FILES
from models.backbone import torchvision_weights_url
from utils.checkpoint import read_pickle, torch_load
from utils.errors import UserError
from utils.paths import REPO_ROOT

logger = logging.getLogger(__name__)

WEIGHTS_DIR = REPO_ROOT / "weights"

class WeightsError(UserError, ValueError):
    """A weights file is missing, unreadable, refused or does not fit; the message names the file."""


# ----------------------------------------------------------------------------- Caffe2 names
_C2_BLOCK = re.compile(r"^res([2-5])_(\d+)_branch(1|2a|2b|2c)_(w|bn_s|bn_b)$")
_C2_PART = {"1": ("downsample.0", "downsample.1"), "2a": ("conv1", "bn1"), "2b": ("conv2", "bn2"),
            "2c": ("conv3", "bn3")}
_C2_STEM = {"conv1_w": "conv1.weight", "res_conv1_bn_s": "bn1.weight", "res_conv1_bn_b": "bn1.bias"}


def caffe2_to_torchvision(name: str) -> Optional[str]:
    """The torchvision ResNet name of a Caffe2 blob, or None when the backbone does not use it.

    >>> caffe2_to_torchvision("res2_0_branch2a_w"), caffe2_to_torchvision("res5_0_branch1_bn_b")
    ('layer1.0.conv1.weight', 'layer4.0.downsample.1.bias')
    """
    if name in _C2_STEM:
        return _C2_STEM[name]
    m = _C2_BLOCK.match(name)
    if m is None:
        return None
    stage, block, branch, kind = m.groups()
    conv, norm = _C2_PART[branch]
    suffix = {"w": f"{conv}.weight", "bn_s": f"{norm}.weight", "bn_b": f"{norm}.bias"}[kind]
    return f"layer{int(stage) - 1}.{block}.{suffix}"


def _caffe2_state(blobs: Mapping, backbone: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(state dict for ``backbone``, unused blob names) from Caffe2 blobs, with affine-only BN statistics."""
    state, unused = {}, []
    for name, value in blobs.items():
        ours = caffe2_to_torchvision(name)
        if ours is None or not isinstance(value, np.ndarray):
            unused.append(name)
            continue
        state[ours] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    for prefix, module in backbone.named_modules():
        if hasattr(module, "running_var") and f"{prefix}.weight" in state:
            eps = float(getattr(module, "eps", 1e-5))
            state[f"{prefix}.running_mean"] = torch.zeros_like(module.running_mean)
            state[f"{prefix}.running_var"] = torch.full_like(module.running_var, 1.0 - eps)
    return state, sorted(unused)


def _torch_state(obj: object, path: Path, backbone: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(state dict for ``backbone``, unused names) from a torch state dict, nested or prefixed."""
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    own = backbone.state_dict()
    state, unused = {}, []
    for k, v in obj.items():
        name = re.sub(r"^(module\.|backbone\.)+", "", k)
        if name in own:
            state[name] = v
        elif not name.endswith("num_batches_tracked"):  # BN counters mean nothing to a frozen norm
            unused.append(k)
    return state, sorted(unused)


# ----------------------------------------------------------------------------- loading
def resolve_weights_path(path: Union[str, Path]) -> Path:
    """A relative path is looked up from the working directory first, then from the repository root."""
    path = Path(path)
    if path.is_absolute() or path.is_file():
        return path
    return REPO_ROOT / path


def missing_weights_message(path: Union[str, Path], url: Optional[str] = None) -> str:
    """One sentence: which file is missing, where it is published and where to put it."""
    path = Path(path)
    known = IMAGENET_FILES.get(path.name)
    if known is not None:
        url = f"{known.url} ({known.size})"
    where = f"download it from {url}" if url else "download or copy it"
    return (f"backbone weights file {path} not found: {where} and put it at {resolve_weights_path(path)}, "
            f"or start from random weights with --opts model.backbone.weights=none")


def _read_state(path: Path, backbone: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    head = path.read_bytes()[:4]
    if head.startswith(b"PK"):  # torch.save zip archive: torch.load(weights_only=True), with its clear errors
        return _torch_state(torch_load(path), path, backbone)
    obj = read_pickle(path)
    if isinstance(obj, dict) and isinstance(obj.get("blobs"), dict):
        obj = obj["blobs"]
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: a pickle of {type(obj).__name__}, not a dict of Caffe2 blobs")
    return _caffe2_state(obj, backbone)


def load_backbone_weights(model_or_backbone: nn.Module, path: Union[str, Path]) -> dict:
    """Load ImageNet weights from ``path`` into the backbone (of a detector, or the backbone itself).

    Returns ``{"path", "loaded", "unused"}``. Raises :class:`WeightsError` when the
    file is missing or refused, a backbone entry is not in the file, or a shape
    differs (naming the key).
    """
    backbone = getattr(model_or_backbone, "backbone", model_or_backbone)
    path = resolve_weights_path(path)
    if not path.is_file():
        raise WeightsError(missing_weights_message(path))
    state, unused = _read_state(path, backbone)
    own = backbone.state_dict()
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise WeightsError(f"{path}: {k} has shape {tuple(v.shape)} in the file but {tuple(own[k].shape)} in "
                               f"the backbone (wrong model.backbone.name or width_mult?)")
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightsError(f"{path}: {len(missing)} backbone entries are not in the file (e.g. {missing[:3]}); "
                           f"does it fit model.backbone.name?")
    backbone.load_state_dict(state, strict=False)
    logger.info("loaded %d backbone tensors from %s; %d names of the file unused%s", len(state), path, len(unused),
                f" ({', '.join(unused[:4])}{', ...' if len(unused) > 4 else ''})" if unused else "")
    return {"path": str(path), "loaded": sorted(state), "unused": unused}


def pretrained_path(backbone_cfg) -> Optional[Path]:
    """The file ``model.backbone.weights`` names (None for ``none``); raises :class:`WeightsError` when missing.

    ``imagenet`` is torchvision's file of ``backbone_cfg.name`` in ``weights/`` (never downloaded here).
    """
    weights = backbone_cfg.weights
    if weights == "none":
        return None
    url = None
    if weights == "imagenet":
        url = torchvision_weights_url(backbone_cfg.name)
        path = WEIGHTS_DIR / url.rsplit("/", 1)[-1]
    else:
        path = resolve_weights_path(weights)
    if not path.is_file():
        raise WeightsError(missing_weights_message(path, url))
    return path


def load_pretrained(model: nn.Module, backbone_cfg) -> Optional[dict]:
    """The trainer's start from ``model.backbone`` of the config: ``weights`` is ``none``, ``imagenet`` or a path."""
    path = pretrained_path(backbone_cfg)
    if path is None:
        logger.info("model.backbone.weights=none: the backbone starts from random weights, as this config chose "
                    "(the official recipes start from ImageNet)")
        return None
    return load_backbone_weights(model, path)
