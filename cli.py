"""The command-line glue above the library: what train.py, eval.py, test.py, ablate.py and tools/ share.

* :func:`run_config`: a run's config from ``--config`` (+ ``--opts``) or from the checkpoint (+ ``--opts``); the
  config validates itself when it loads (config/schema.py: types, ranges and each family's names).
* :func:`resolve_device`.

The project-free parts of a script (the shared argparse parent, logging, the one-line user errors) are in
``utils/script.py``.
"""
from __future__ import annotations

from typing import Optional

import torch

from config import Config, load_config
from config.loader import config_from_checkpoint
from utils.checkpoint import load_checkpoint
from utils.errors import UserError
from utils.paths import REPO_ROOT

DEFAULT_CONFIG = REPO_ROOT / "config" / "quickstart.yaml"


def run_config(args, weight: Optional[str] = None) -> Config:
    """The config of a script: ``--config`` (+ ``--opts``), or the one stored in the checkpoint ``weight``
    (+ ``--opts``), or the quickstart's; with a ``weight``, :func:`config.loader.config_from_checkpoint` decides.

    ``-d/--dataset``, ``--root`` and ``--num_workers``, where a script has them, override ``data.dataset``,
    ``data.root`` and ``data.num_workers``; a ``--num_workers`` above 0 also turns ``data.cache_images`` off unless
    ``--opts`` sets it. ``model.num_classes: auto`` takes the class count of the checkpoint's
    ``class_names`` when there is one.
    """
    args.opts = list(args.opts)
    if getattr(args, "dataset", None):
        args.opts.append(f"data.dataset={args.dataset}")
    if getattr(args, "root", None):
        args.opts.append(f"data.root={args.root}")
    if getattr(args, "num_workers", None) is not None:  # 0 is a value
        args.opts.append(f"data.num_workers={args.num_workers}")
        if args.num_workers > 0 and not any(o.startswith("data.cache_images=") for o in args.opts):
            # the flag asks for loader workers, and an image cache cannot outlive them: the cache gives way
            args.opts.append("data.cache_images=false")
    if weight:
        return config_from_checkpoint(load_checkpoint(weight), args.opts, config=args.config, source=str(weight))
    return load_config(args.config or DEFAULT_CONFIG, args.opts)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``--device``: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` (this process's GPU), ``cuda:N``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for CUDA, but torch.cuda.is_available() is False")
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # the current device: else pin-memory and allocator contexts land on GPU 0
    return device
