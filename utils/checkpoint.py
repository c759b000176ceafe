"""Checkpoint files: atomic writes, safe reads, clear errors on bad files and mismatches.

Safe reading lives here, at the bottom of the house, for every kind of weights file: this project's checkpoints
and torchvision files through ``torch.load(weights_only=True)`` (:func:`torch_load`), Detectron / Caffe2 ImageNet
pickles through :class:`RestrictedUnpickler` (numpy arrays and builtin containers only: any other global is
refused before it runs; :func:`read_pickle`).
"""
from __future__ import annotations

import codecs
import io
import os
import pickle
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn

from utils.errors import UserError


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


# ----------------------------------------------------------------------------- safe reading of pickles
def _allowed_globals() -> dict[tuple[str, str], object]:
    multiarray = getattr(np, "_core", None) or np.core
    reconstruct = multiarray.multiarray._reconstruct
    scalar = multiarray.multiarray.scalar
    allowed = {("_codecs", "encode"): codecs.encode, ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = reconstruct
        allowed[(mod, "scalar")] = scalar
    return allowed


class PickleRefused(UserError, ValueError):
    """The pickle asks for a global that would run code."""


class UnreadablePickle(UserError, ValueError):
    """The file is not a readable pickle of numpy arrays (truncated, another format)."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and builtin containers only; any other global is refused before it runs."""

    _ALLOWED = None

    def find_class(self, module: str, name: str):
        if RestrictedUnpickler._ALLOWED is None:
            RestrictedUnpickler._ALLOWED = _allowed_globals()
        obj = RestrictedUnpickler._ALLOWED.get((module, name))
        if obj is None:
            raise PickleRefused(f"refused: it would run code (global {module}.{name})")
        return obj


def read_pickle(path: Union[str, Path]) -> object:
    """Read a (Python 2 or 3) pickle of numpy arrays with :class:`RestrictedUnpickler`."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except PickleRefused as e:
        raise PickleRefused(f"{path}: {e}") from None
    except Exception as e:  # truncated, not a pickle, ...
        raise UnreadablePickle(f"{path}: not a readable pickle of numpy arrays ({type(e).__name__}: {e})") from None


# ----------------------------------------------------------------------------- checkpoints
class CheckpointError(UserError, ValueError):
    """A checkpoint file is missing, not a PyTorch checkpoint, refused, or does not fit; the message names it."""


class CheckpointNotFoundError(FileNotFoundError, CheckpointError):
    pass


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _refused_global(message: str) -> Optional[str]:
    """The global a refused pickle asked for, from torch's weights-only error text."""
    m = _GLOBAL.search(message)
    return m.group(1) if m else None


def _load_error(path: Path, error: Exception) -> CheckpointError:
    """Our one-line message for a failed ``torch.load(weights_only=True)`` (torch's text is not passed on)."""
    name = _refused_global(str(error)) if isinstance(error, pickle.UnpicklingError) else None
    if name is not None:
        return CheckpointError(f"{path}: refused: it would run code (global {name})")
    with open(path, "rb") as f:
        head = f.read(2)
    if not head.startswith(b"PK") and head[:1] == b"\x80":  # a bare pickle (e.g. a Detectron .pkl)

        try:
            read_pickle(path)  # numpy arrays and builtin containers only; refuses any other global unrun
        except PickleRefused as e:
            return CheckpointError(str(e))
        except UnreadablePickle:
            pass
        else:
            return CheckpointError(f"{path}: a pickle of arrays (a Detectron/Caffe2 backbone file?), not a PyTorch "
                                   f"checkpoint; backbone files go in model.backbone.weights")
    return CheckpointError(f"{path}: not a PyTorch checkpoint (not a zip archive or truncated)")


def torch_load(path: Union[str, Path], data: Optional[bytes] = None) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a file it cannot read raises :class:`CheckpointError`.

    ``data``: the bytes of ``path`` when they were read elsewhere (rank 0 sends them to ranks on other nodes).
    The messages say what is wrong: "not a PyTorch checkpoint (not a zip archive or truncated)", or
    "refused: it would run code (global X)" for a pickle that would import and call ``X`` (never run).
    """
    path = Path(path)
    if data is None and not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # torch's note on pickle protocols would precede our one-line error
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path if data is None else io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError (zip reader), EOFError, KeyError ... on a bad file
        if data is not None:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (not a zip archive or truncated)") from None
        raise _load_error(path, e) from None


def load_checkpoint(path: Union[str, Path], data: Optional[bytes] = None) -> dict:
    """Load a checkpoint with ``torch.load(weights_only=True)``; errors name the file and the problem.
    ``data``: the file's bytes, read elsewhere (see :func:`torch_load`)."""
    path = Path(path)
    obj = torch_load(path, data)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a checkpoint of this project (expected a dict, got {type(obj).__name__})")
    if "model" not in obj:
        if all(isinstance(v, torch.Tensor) for v in obj.values()) and obj:
            return {"model": obj}  # a bare state dict
        raise CheckpointError(f"{path}: not a checkpoint of this project (no 'model' entry; keys: {sorted(obj)[:8]})")
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
        raise CheckpointError(f"{path}: checkpoint does not fit the configured model: " + "; ".join(parts)
                         + ". Check --config (num_classes, backbone, anchors) or convert official weights with "
                           "tools/convert_official.py.")
    model.load_state_dict(state, strict=True)
    return ckpt


def remove_stale_temporaries(folder: Union[str, Path]) -> list[Path]:
    """Delete the temporary files of :func:`save_checkpoint` writes that a kill interrupted."""
    stale = sorted(Path(folder).glob(".*.pth.*.tmp"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
