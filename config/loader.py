"""YAML loading, base inheritance, dotted overrides and validation."""
from __future__ import annotations

import dataclasses
import functools
import typing
from pathlib import Path
from typing import Any, Collection, Iterable, Mapping, Optional, Union

import yaml

from config.schema import Config
from utils.errors import UserError

BASE_KEY = "_base_"


class ConfigError(UserError, ValueError):
    """A configuration file or override is invalid; the message names the key."""


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular '{BASE_KEY}' chain: {' -> '.join(map(str, seen + (path,)))}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    base_data = _read_yaml(path.parent / base, seen + (path,))
    return _deep_merge(base_data, data)


def _deep_merge(base: dict, update: Mapping) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_overrides(items: Optional[Iterable[str]]) -> dict[str, Any]:
    """Turn ``["solver.base_lr=0.01", "model.matcher.name=iou_topk"]`` into a dict.

    Values are parsed as YAML scalars/lists (``0.01`` -> float, ``[800, 640]`` -> list,
    ``true`` -> bool), so the command line speaks the same types as the files.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.sub=value")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"override '{item}': value is not valid YAML: {e}") from e
    return out


def apply_overrides(data: dict, overrides: Union[Mapping[str, Any], Iterable[str], None]) -> dict:
    """Set dotted ``overrides`` (``{"a.b": v}`` or ``["a.b=v", ...]``) in the raw config dict ``data``, in place.

    Returns ``data``; validation is ``config_from_dict``'s job.
    """
    if overrides and not isinstance(overrides, Mapping):
        overrides = parse_overrides(overrides)
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
    return data


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{key}': '{p}' is not a section")
    node[parts[-1]] = value


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert lists to tuples."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Union:  # Optional[X]
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(value, inner[0], key)
        errors = []
        for a in inner:  # Union[int, str] and the like: the first member the value fits
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e).split(": ", 1)[-1])
        raise ConfigError(f"config key '{key}': " + "; or ".join(errors))
    if origin is tuple:
        if isinstance(value, (int, float, str)) and len(args) == 2 and args[1] is Ellipsis:
            value = [value]  # a single value where a list is expected
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"config key '{key}': expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return value
    raise ConfigError(f"config key '{key}': unsupported type {tp}")


def _build(cls: type, data: Mapping, prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"config key '{prefix.rstrip('.')}': expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}'"
            + (f" (and {len(unknown) - 1} more: {', '.join(prefix + u for u in unknown[1:])})" if len(unknown) > 1 else "")
            + f"; valid keys here: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, data[f.name] or {}, f"{prefix}{f.name}.")
        else:
            kwargs[f.name] = _coerce(data[f.name], tp, prefix + f.name)
    return cls(**kwargs)


# Switches of one module that keep no list of their own (yet): the values their code branches on.
def _families() -> dict[str, Collection[str]]:
    """Each config key that names one member of a family -> that family's own list of names.

    Imported here, not at the top: these modules import torch, and some of them import ``config``.
    """
    from data.build import DATASETS
    from data.pipelines import PIPELINES
    from data.synthetic import SYNTHETIC_STATS
    from engine.optim import OPTIMIZERS, SCHEDULES
    from models.backbone import BACKBONE_NORMS, BACKBONES, STYLES
    from models.box_coder import DECODE_METHODS
    from models.criterion import NORMALIZATIONS
    from models.layers import ACTIVATIONS, NORMS
    from models.detector import INPUT_FORMATS
    from models.matcher import MATCHERS, GridMatcher
    from utils.precision import AMP_MODES

    return {
        "model.backbone.name": BACKBONES,
        "model.backbone.style": STYLES,
        "model.backbone.norm": BACKBONE_NORMS,
        "model.input_format": INPUT_FORMATS,
        "model.matcher.grid_anchors": GridMatcher.anchor_choices,
        "model.encoder.norm": NORMS,
        "model.decoder.norm": NORMS,
        "model.encoder.activation": ACTIVATIONS,
        "model.decoder.activation": ACTIVATIONS,
        "model.box_coder.decode_method": DECODE_METHODS,
        "model.matcher.name": MATCHERS,
        "model.loss.normalization": NORMALIZATIONS,
        "data.dataset": DATASETS,
        "data.pipeline": PIPELINES,
        "data.synthetic_stats": SYNTHETIC_STATS,
        "solver.schedule": SCHEDULES,
        "solver.amp": AMP_MODES,
        "solver.optimizer": OPTIMIZERS,
    }


def _validate_choices(cfg: Config) -> None:
    for key, allowed in _families().items():
        value = functools.reduce(getattr, key.split("."), cfg)
        if value not in allowed:
            raise ConfigError(f"config key '{key}': {value!r} is not one of {sorted(allowed)}")


def _check(ok: bool, key: str, why: str, *, got: Any) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}': {why}, got {got!r}")


def _validate_model(m) -> None:
    if len(m.encoder.dilations) != m.encoder.num_blocks:
        raise ConfigError(
            f"config key 'model.encoder.dilations': {len(m.encoder.dilations)} dilations for "
            f"model.encoder.num_blocks={m.encoder.num_blocks}"
        )
    _check(m.decoder.pred_kernel in (1, 3), "model.decoder.pred_kernel", "must be 1 or 3", got=m.decoder.pred_kernel)
    _check(m.matcher.atss_topk >= 2, "model.matcher.atss_topk", "must be >= 2 (its IoUs' std needs two)",
           got=m.matcher.atss_topk)
    _check(0 <= m.backbone.freeze_at <= 5, "model.backbone.freeze_at", "must be in 0..5", got=m.backbone.freeze_at)
    _check(m.num_classes == "auto" or (not isinstance(m.num_classes, str) and m.num_classes >= 1),
           "model.num_classes", "must be >= 1 or 'auto'", got=m.num_classes)
    _check(all(w > 0 and h > 0 for w, h in m.anchors.custom_wh), "model.anchors.custom_wh",
           "widths and heights must be > 0", got=m.anchors.custom_wh)


def _validate_data(d) -> None:
    """The data keys, with the parameters of the pipeline's steps (data/pipelines.py, data/yolo_transforms.py,
    data/mosaic.py)."""

    def check(ok: bool, key: str, why: str) -> None:
        _check(ok, f"data.{key}", why, got=getattr(d, key))

    check(d.test_batch_size >= 1, "test_batch_size", "must be >= 1")
    check(not d.class_names or d.dataset == "voc_xml", "class_names",
          f"is read by data.dataset=voc_xml only ({d.dataset} names its classes in its own files)")
    check(all(n.strip() for n in d.class_names) and len(set(d.class_names)) == len(d.class_names), "class_names",
          "must be distinct non-empty names")
    check(not d.synthetic_size_range or (len(d.synthetic_size_range) == 2
                                         and 1 <= d.synthetic_size_range[0] <= d.synthetic_size_range[1]),
          "synthetic_size_range", "must be empty or [min, max] with 1 <= min <= max")
    check(d.synthetic_max_aspect >= 1.0, "synthetic_max_aspect", "must be >= 1")
    check(d.synthetic_stats == "none" or not d.synthetic_size_range, "synthetic_size_range",
          f"must be empty with data.synthetic_stats={d.synthetic_stats} (its table draws the image sizes)")
    check(0.0 <= d.mixup_prob <= 1.0, "mixup_prob", "must be in [0, 1]")
    check(0.0 <= d.jitter_ratio < 0.5, "jitter_ratio", "must be in [0, 0.5)")
    for key in ("resize_shape", "test_resize_shape", "mosaic_size"):
        check(min(getattr(d, key)) >= 1, key, "needs two positive sides (h, w)")
    check(0.0 < d.scale_jitter[0] <= d.scale_jitter[1], "scale_jitter", "must be [low, high] with 0 < low <= high")
    check(0.0 <= d.hue <= 0.5, "hue", "must be in [0, 0.5] (a fraction of the hue circle)")
    for key in ("saturation", "exposure"):
        check(getattr(d, key) >= 1.0, key, "must be >= 1 (the scale is drawn in [1 / s, s])")
    check(0.0 <= d.mosaic_prob <= 1.0, "mosaic_prob", "must be in [0, 1]")
    check(0.0 <= d.mosaic_min_offset < 0.5 and all(
        int(s * d.mosaic_min_offset) < int(s * (1 - d.mosaic_min_offset)) for s in d.mosaic_size),
        "mosaic_min_offset", f"leaves no room for the cut point in data.mosaic_size {list(d.mosaic_size)}")


def _validate_solver_and_train(s, t) -> None:
    _check(s.batch_size >= 1, "solver.batch_size", "must be >= 1", got=s.batch_size)
    _check(list(s.steps) == sorted(s.steps), "solver.steps", "must be increasing", got=s.steps)
    _check(0.0 <= t.ema_decay < 1.0, "train.ema_decay", "must be in [0, 1)", got=t.ema_decay)
    _check(t.ema_ramp >= 0, "train.ema_ramp", "must be >= 0", got=t.ema_ramp)
    _check(t.nan_retries >= 0, "train.nan_retries", "must be >= 0", got=t.nan_retries)


def _validate(cfg: Config) -> None:
    """Checks beyond the types: choices from each family's list, ranges, consistency between keys."""
    _validate_choices(cfg)
    _validate_model(cfg.model)
    _validate_data(cfg.data)
    _validate_solver_and_train(cfg.solver, cfg.train)


def _validate_backbone_weights(m) -> None:
    """The ImageNet start must fit the model it starts: style, channel order and pixel statistics."""
    from models.pretrained import IMAGENET_FILES, TORCHVISION_MEAN, TORCHVISION_STD

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


def config_from_dict(data: Mapping) -> Config:
    cfg = _build(Config, data, "")
    _validate(cfg)
    _validate_backbone_weights(cfg.model)
    return cfg


def load_config(path: Union[str, Path, None], overrides: Union[Mapping[str, Any], Iterable[str], None] = None) -> Config:
    """Load a YAML preset (following ``_base_``), apply dotted ``overrides``, validate.

    ``path=None`` starts from the schema defaults (the official R50-C5 1x recipe).
    """
    data = _read_yaml(Path(path)) if path is not None else {}
    return config_from_dict(apply_overrides(data, overrides))


def config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys present in both nested config dicts whose values differ.

    A key in only one of them does not count: a config written before the schema gained a key (at its default)
    still equals the same config written after.
    """
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return [k for key in sorted(set(old) & set(new), key=str) for k in config_diff(old[key], new[key], f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".")]


def config_to_dict(cfg: Config) -> dict:
    """Plain nested dict (tuples as lists), suitable for YAML/JSON and checkpoints."""

    def conv(x):
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [conv(v) for v in x]
        return x

    return conv(dataclasses.asdict(cfg))
