"""Checkpoints: atomic writes, ``weights_only`` loads, and clear errors on mismatches."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn


def save_checkpoint(path: Union[str, Path], state: dict) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, fsync, then rename.

    A crash mid-write leaves the previous checkpoint intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: Union[str, Path]) -> dict:
    """Load a checkpoint with ``torch.load(weights_only=True)``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable checkpoint (torch.load with weights_only=True failed: {e})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a checkpoint of this project (expected a dict, got {type(obj).__name__})")
    if "model" not in obj:
        if all(isinstance(v, torch.Tensor) for v in obj.values()) and obj:
            return {"model": obj}  # a bare state dict
        raise ValueError(f"{path}: not a checkpoint of this project (no 'model' entry; keys: {sorted(obj)[:8]})")
    return obj


def load_model_weights(model: nn.Module, path: Union[str, Path]) -> dict[str, Any]:
    """Load ``path`` into ``model`` strictly; a key or shape mismatch raises a ValueError naming them."""
    ckpt = load_checkpoint(path)
    state = ckpt["model"]
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (e.g. {wrong[:3]})")
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        raise ValueError(f"{path}: checkpoint does not fit the configured model: " + "; ".join(parts)
                         + ". Check --config (num_classes, backbone, anchors) or convert official weights with "
                           "utils/convert_official.py.")
    model.load_state_dict(state, strict=True)
    return ckpt


def load_weights_or_exit(model: nn.Module, path: Union[str, Path]) -> dict[str, Any]:
    """``load_model_weights`` for command-line scripts: a bad file ends the program with its message, no traceback."""
    try:
        return load_model_weights(model, path)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
