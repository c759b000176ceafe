"""The command-line glue above the library: what train.py, eval.py, test.py, ablate.py and tools/ share.

* :func:`check_config`: the names a config picks from each family (a matcher of ``models.matcher.MATCHERS``, a
  dataset of ``data.build.DATASETS``, ...) and the fit of the ImageNet start to the model. It sits here, above
  every family, so that ``config/`` imports nothing above itself; :func:`load_checked_config` is
  ``config.load_config`` plus these checks, what every script loads a preset with.
* :func:`run_config`: a run's config from ``--config`` (+ ``--opts``) or from the checkpoint (+ ``--opts``).
* :func:`resolve_device`.

The project-free parts of a script (the shared argparse parent, logging, the one-line user errors) are in
``utils/script.py``.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Collection, Iterable, Mapping, Optional, Union

import torch

from config import Config, ConfigError, load_config
from config.loader import config_from_checkpoint, resolve_num_classes
from data.build import DATASETS
from data.pipelines import PIPELINES
from data.synthetic import SYNTHETIC_STATS
from engine.optim import LR_DECAYS, OPTIMIZERS, SCHEDULES
from models.backbone import BACKBONE_NORMS, BACKBONES, STYLES
from models.box_coder import DECODE_METHODS
from models.criterion import NORMALIZATIONS
from models.detector import INPUT_FORMATS
from models.layers import ACTIVATIONS, NORMS
from models.matcher import MATCHERS, GridMatcher
from models.pretrained import IMAGENET_FILES, TORCHVISION_MEAN, TORCHVISION_STD
from utils.checkpoint import load_checkpoint
from utils.errors import UserError
from utils.paths import REPO_ROOT
from utils.precision import AMP_MODES

DEFAULT_CONFIG = REPO_ROOT / "config" / "quickstart.yaml"


def families() -> dict[str, Collection[str]]:
    """Each config key that names one member of a family -> that family's own list of names (read at call time,
    so a name added to a family's list is valid at once)."""
    return {
        "model.backbone.name": BACKBONES,
        "model.backbone.style": STYLES,
        "model.backbone.norm": BACKBONE_NORMS,
        "model.input_format": INPUT_FORMATS,
        "model.matcher.grid.anchors": GridMatcher.anchor_choices,
        "model.encoder.norm": NORMS,
        "model.decoder.norm": NORMS,
        "model.encoder.activation": ACTIVATIONS,
        "model.decoder.activation": ACTIVATIONS,
        "model.box_coder.decode_method": DECODE_METHODS,
        "model.matcher.name": MATCHERS,
        "model.loss.normalization": NORMALIZATIONS,
        "data.dataset": DATASETS,
        "data.pipeline": PIPELINES,
        "data.synthetic.stats": SYNTHETIC_STATS,
        "solver.schedule": SCHEDULES,
        "solver.lr_decay": LR_DECAYS,
        "solver.amp": AMP_MODES,
        "solver.optimizer": OPTIMIZERS,
    }


def check_names(cfg: Config) -> None:
    """Every family key names a member of its family; the error names the key and the family's names."""
    for key, allowed in families().items():
        value = functools.reduce(getattr, key.split("."), cfg)
        if value not in allowed:
            raise ConfigError(f"config key '{key}': {value!r} is not one of {sorted(allowed)}")


def check_backbone_weights(m) -> None:
    """The ImageNet start (``model.backbone.weights``) must fit the model it starts: style, channel order and pixel
    statistics (:data:`models.pretrained.IMAGENET_FILES` says what each published file needs)."""
    weights, bb = m.backbone.weights, m.backbone
    if weights == "none":
        return

    def fail(keys: str, why: str) -> None:
        raise ConfigError(f"config keys 'model.backbone.weights' and {keys}: {why}")

    def close(a, b) -> bool:
        return all(abs(x - y) < 1e-3 for x, y in zip(a, b))

    if bb.width_mult != 1.0:
        fail("'model.backbone.width_mult'", f"pretrained weights need width_mult=1, got {bb.width_mult}")
    if weights == "imagenet":  # torchvision's files
        if bb.style != "pytorch":
            fail("'model.backbone.style'", "torchvision weights (imagenet) are pytorch-style (stride on the 3x3 "
                                           "conv); set model.backbone.style=pytorch")
        if m.input_format != "RGB":
            fail("'model.input_format'", "torchvision weights (imagenet) expect RGB input; set model.input_format=RGB")
        if not (close(m.pixel_mean, TORCHVISION_MEAN) and close(m.pixel_std, TORCHVISION_STD)):
            fail("'model.pixel_mean' / 'model.pixel_std'", f"torchvision weights (imagenet) expect mean "
                 f"{list(TORCHVISION_MEAN)} and std {list(TORCHVISION_STD)} (RGB, 0-255), got {list(m.pixel_mean)} "
                 f"and {list(m.pixel_std)}")
        return
    name = Path(weights).name
    known = IMAGENET_FILES.get(name)
    if known is None:
        if name.endswith(".pkl") and m.input_format != "BGR":
            fail("'model.input_format'", f"{name} is a Detectron/Caffe2 pickle, trained on BGR input; set "
                                         f"model.input_format=BGR")
        return
    if bb.name not in known.backbones:
        fail("'model.backbone.name'", f"{name} holds {' / '.join(known.backbones)}, not {bb.name}")
    if known.style is not None and bb.style != known.style:
        fail("'model.backbone.style'", f"{name} is {known.style}-style; set model.backbone.style={known.style}")
    if m.input_format != known.input_format:
        fail("'model.input_format'", f"{name} was trained on {known.input_format} input; set "
                                     f"model.input_format={known.input_format}")
    if known.pixel_std is not None and not close(m.pixel_std, known.pixel_std):
        fail("'model.pixel_std'", f"{name} expects pixel_std {list(known.pixel_std)}, got {list(m.pixel_std)}")


def check_config(cfg: Config) -> Config:
    """:func:`check_names` and :func:`check_backbone_weights`; returns ``cfg``."""
    check_names(cfg)
    check_backbone_weights(cfg.model)
    return cfg


def load_checked_config(path: Union[str, Path, None],
                        overrides: Union[Mapping[str, Any], Iterable[str], None] = None) -> Config:
    """``config.load_config`` (YAML, ``_base_``, overrides, types, ranges) and :func:`check_config`."""
    return check_config(load_config(path, overrides))


def run_config(args, weight: Optional[str] = None) -> Config:
    """The config of a script: ``--config`` (+ ``--opts``), or the one stored in the checkpoint ``weight``
    (+ ``--opts``), or the quickstart's.

    ``-d/--dataset``, ``--root`` and ``--num_workers``, where a script has them, override ``data.dataset``,
    ``data.root`` and ``data.num_workers``. ``model.num_classes: auto`` takes the class count of the checkpoint's
    ``class_names`` when there is one.
    """
    args.opts = list(args.opts)
    if getattr(args, "dataset", None):
        args.opts.append(f"data.dataset={args.dataset}")
    if getattr(args, "root", None):
        args.opts.append(f"data.root={args.root}")
    if getattr(args, "num_workers", None) is not None:  # 0 is a value
        args.opts.append(f"data.num_workers={args.num_workers}")
    if args.config:
        cfg = load_checked_config(args.config, args.opts)
        if weight and cfg.model.num_classes == "auto":
            cfg = resolve_num_classes(cfg, load_checkpoint(weight).get("class_names") or [])
        return cfg
    if weight:
        return check_config(config_from_checkpoint(load_checkpoint(weight), args.opts, source=str(weight)))
    return load_checked_config(DEFAULT_CONFIG, args.opts)


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
