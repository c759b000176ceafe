"""Rewrite configs written with older key names to the current ones: a run's ``config.yaml`` and the config a
checkpoint stores.

    python -m tools.upgrade_config runs/my_run                 # every config.yaml and *.pth under the folder
    python -m tools.upgrade_config weights/old.pth --dry-run   # only say what would change

The loader knows only the current keys, so a run folder or checkpoint written with an older layout fails to load
with "unknown config key". This tool moves each old key's value to its key now (:data:`RENAMED`) and drops the
keys whose meaning other keys now carry (:data:`DERIVED`: ``model.encoder.num_blocks`` is ``len(dilations)``,
``solver.sync_bn`` is each part's ``norm: syncbn``). The result must load (:func:`config.loader.config_from_dict`)
before anything is written; a checkpoint is written atomically (:func:`utils.checkpoint.save_checkpoint`), a YAML
file as a run writes its ``config.yaml`` (keys in schema order). A YAML file with comments (a hand-written preset)
is refused: its comments would be lost, edit it by hand.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

if __package__ in (None, ""):  # python tools/<name>.py: the repository root on sys.path (tools/_bootstrap.py)
    import _bootstrap  # noqa: F401

from config import Config, ConfigError, config_to_dict
from config.loader import config_from_dict
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.errors import UserError
from utils.script import run_script

_GRID_MATCHERS = ("grid_center", "grid_neighbors", "grid_inside")

# old dotted key -> the key(s) that hold its value now
RENAMED: dict[str, tuple[str, ...]] = {
    **{f"data.synthetic_{k}": (f"data.synthetic.{k}",) for k in (
        "num_train", "num_val", "image_size", "seed", "num_objects", "min_box", "max_box", "size_range", "max_aspect",
        "stats")},
    **{f"data.{k}": (f"data.yolo.{k}",) for k in (
        "jitter_crop", "jitter_ratio", "resize_shape", "scale_jitter", "distortion", "hue", "saturation", "exposure",
        "test_resize_shape")},
    **{f"data.mosaic_{k}": (f"data.mosaic.{k}",) for k in ("prob", "size", "min_offset")},
    **{f"data.mixup_{k}": (f"data.mixup.{k}",) for k in ("prob", "alpha")},
    "model.matcher.topk": ("model.matcher.uniform.topk", "model.matcher.iou_topk.topk"),
    "model.matcher.max_iou_pos_thresh": ("model.matcher.max_iou.pos_thresh",),
    "model.matcher.max_iou_neg_thresh": ("model.matcher.max_iou.neg_thresh",),
    "model.matcher.atss_topk": ("model.matcher.atss.topk",),
    "model.matcher.grid_anchors": ("model.matcher.grid.anchors",),
    **{f"model.matcher.{g}.anchors": ("model.matcher.grid.anchors",) for g in _GRID_MATCHERS},
}


def _num_blocks(flat: dict[str, Any]) -> dict[str, Any]:
    dilations = flat.get("model.encoder.dilations", Config().model.encoder.dilations)
    if flat["model.encoder.num_blocks"] != len(dilations):
        raise ValueError(f"needs one dilation per block, got dilations {list(dilations)}")
    return {}


def _sync_bn(flat: dict[str, Any]) -> dict[str, Any]:
    """solver.sync_bn turned every BatchNorm into SyncBatchNorm under DDP: each part's norm says so now."""
    if not flat["solver.sync_bn"]:
        return {}
    default = config_to_dict(Config())["model"]
    return {f"model.{part}.norm": "syncbn" for part in ("backbone", "encoder", "decoder")
            if flat.get(f"model.{part}.norm", default[part]["norm"]) == "bn"}


# old dotted key whose meaning other keys now carry -> the values it gives them (raises ValueError when it
# contradicts them)
DERIVED = {"model.encoder.num_blocks": _num_blocks, "solver.sync_bn": _sync_bn}


def _flat(data: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def _nest(flat: dict[str, Any]) -> dict:
    """The nested dict of dotted ``flat``, its keys in the schema's order (unknown keys last)."""
    order = {k: i for i, k in enumerate(_flat(config_to_dict(Config())))}
    out: dict = {}
    for key in sorted(flat, key=lambda k: order.get(k, len(order))):
        *parents, last = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = flat[key]
    return out


def upgrade(data: dict, source: str = "config") -> dict:
    """``data`` (a raw nested config dict) with every old key moved to the current layout; a copy. Two old keys
    that land on one key with different values, or a derived key that disagrees, are an error naming both."""
    flat = _flat(copy.deepcopy(data))
    out: dict[str, Any] = {k: v for k, v in flat.items() if k not in RENAMED and k not in DERIVED}
    given_by: dict[str, str] = {k: k for k in out}
    for old, value in flat.items():
        if old in DERIVED:
            try:
                out.update(DERIVED[old](flat))
            except ValueError as e:
                raise ConfigError(f"{source}: config key '{old}' {e}") from None
            continue
        for new in RENAMED.get(old, ()):
            if new in out and out[new] != value:
                raise ConfigError(f"{source}: config keys '{given_by[new]}' ({out[new]!r}) and '{old}' ({value!r}) "
                                  f"both give '{new}'")
            out[new], given_by[new] = value, old
    return _nest(out)


def _has_comments(text: str) -> bool:
    return any(line.lstrip().startswith("#") or " #" in line for line in text.splitlines())


def upgrade_file(path: Path, *, dry_run: bool = False) -> bool:
    """Upgrade the config of ``path`` (a YAML config or a checkpoint) in place; whether it changed."""
    is_yaml = path.suffix in (".yaml", ".yml")
    if is_yaml:
        text = path.read_text()
        data = yaml.safe_load(text) or {}
    else:
        checkpoint = load_checkpoint(path)
        if "config" not in checkpoint:
            raise UserError(f"{path}: the checkpoint holds no config")
        data = checkpoint["config"]
    new = upgrade(data, str(path))
    try:
        config_from_dict(new)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    if new == data:
        return False
    if dry_run:
        return True
    if is_yaml:
        if _has_comments(text):
            raise UserError(f"{path}: has comments, which rewriting would lose; rename its keys by hand "
                            f"(python -m tools.upgrade_config --help lists them)")
        path.write_text(yaml.safe_dump(new, sort_keys=False))
    else:
        save_checkpoint(path, {**checkpoint, "config": new})
    return True


def config_files(paths: Sequence[Path]) -> list[Path]:
    """The files themselves, and every ``config.yaml`` and ``*.pth`` under each folder."""
    out = []
    for p in paths:
        if p.is_dir():
            out += sorted(p.rglob("config.yaml")) + sorted(p.rglob("*.pth"))
        elif p.is_file():
            out.append(p)
        else:
            raise UserError(f"{p}: no such file or folder")
    return out


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.upgrade_config", description=__doc__.split("\n\n")[0],
                                epilog="Old keys: " + "; ".join(f"{k} -> {', '.join(v)}" for k, v in RENAMED.items())
                                + "; carried by other keys: " + ", ".join(DERIVED))
    p.add_argument("paths", nargs="+", type=Path, help="config.yaml / checkpoint files, or folders holding them")
    p.add_argument("--dry-run", action="store_true", help="print the files that would change, write nothing")
    args = p.parse_args(argv)
    files = config_files(args.paths)
    changed = [f for f in files if upgrade_file(f, dry_run=args.dry_run)]
    for f in changed:
        print(f"{'would upgrade' if args.dry_run else 'upgraded'} {f}")
    print(f"{len(changed)} of {len(files)} files {'would change' if args.dry_run else 'changed'}", file=sys.stderr)


if __name__ == "__main__":
    run_script(main)
