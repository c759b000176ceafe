"""YAML loading, base inheritance, dotted overrides and validation."""
from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Optional, Union

import yaml

from config.errors import ConfigError
from config.schema import Config

BASE_KEY = "_base_"

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


def _fraction(text: str, key: str) -> float:
    """``"1/1500"`` -> 1 / 1500: a float key may be written as a fraction of two numbers (read, never evaluated)."""
    num, slash, den = text.partition("/")
    try:
        value = float(num) / float(den)
    except (ValueError, ZeroDivisionError):
        slash = ""
    if not slash:
        raise ConfigError(f"config key '{key}': expected a number or a fraction such as 1/1500, got {text!r}")
    return value


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert lists to tuples."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:  # a family's names (config/schema.py)
        if isinstance(value, bool) or value not in args:
            raise ConfigError(f"config key '{key}': {value!r} is not one of {list(args)}")
        return value
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
        if isinstance(value, str):
            return _fraction(value, key)
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
            + (f" (and {len(unknown) - 1} more: {', '.join(prefix + u for u in unknown[1:])})"
               if len(unknown) > 1 else "")
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


def check_sections(node: Any, key: str = "") -> None:
    """Call ``check(key)`` of every section of the tree under ``node``, the deepest first (each section checks
    its own values; this loader knows none of them)."""
    for f in dataclasses.fields(node):
        child = getattr(node, f.name)
        if dataclasses.is_dataclass(child):
            check_sections(child, f"{key}{f.name}.")
    if hasattr(node, "check"):
        node.check(key.rstrip(".") or "config")


def config_from_dict(data: Mapping) -> Config:
    cfg = _build(Config, data, "")
    check_sections(cfg)
    return cfg


def load_config(path: Union[str, Path, None],
                overrides: Union[Mapping[str, Any], Iterable[str], None] = None) -> Config:
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
        return [k for key in sorted(set(old) & set(new), key=str)
                for k in config_diff(old[key], new[key], f"{prefix}{key}.")]
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


def resolve_num_classes(cfg: Config, class_names) -> Config:
    """``cfg`` with ``model.num_classes: auto`` replaced by the number of ``class_names`` (the training set's)."""
    if cfg.model.num_classes != "auto":
        return cfg
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=len(class_names)))


def config_from_checkpoint(checkpoint: Mapping, overrides: Union[Mapping[str, Any], Iterable[str], None] = None, *,
                           config: Union[str, Path, Config, None] = None, source: str = "the checkpoint") -> Config:
    """The config of the run ``checkpoint`` (a checkpoint's dict) comes from: the one way the scripts, the tools and
    the Predictor rebuild it.

    ``config`` (a YAML path, + ``overrides``; or a :class:`Config`, taken as it is) when given, else the config the
    checkpoint stores (+ ``overrides``); ``model.num_classes: auto`` takes the count of the checkpoint's
    ``class_names``. ``source`` names the checkpoint in errors.
    """
    if isinstance(config, Config):
        if overrides:
            raise ConfigError("overrides apply to a YAML config or a checkpoint's config, not to a Config object")
        cfg = config
    elif config is not None:
        cfg = load_config(config, overrides)
    elif "config" not in checkpoint:
        raise ConfigError(f"{source} holds no config: pass one (--config)")
    else:
        cfg = config_from_dict(apply_overrides(copy.deepcopy(dict(checkpoint["config"])), overrides))
    return resolve_num_classes(cfg, checkpoint["class_names"]) if checkpoint.get("class_names") else cfg
