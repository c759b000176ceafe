"""Convert an official YOLOF (cvpods) checkpoint into this project's format.

    python -m tools.convert_official YOLOF_R_50_C5_1x.pth weights/yolof_r50_c5_1x.pth

The official state-dict names (cvpods ResNet + YOLOF encoder/decoder) map to
ours one to one::
    backbone.stem.conv1.{weight,norm.*}          -> backbone.conv1.weight, backbone.bn1.*
    backbone.res{2..5}.j.conv{n}.{weight,norm.*} -> backbone.layer{1..4}.j.conv{n}.weight, .bn{n}.*
    backbone.res{2..5}.j.shortcut.{weight,norm.*}-> backbone.layer{1..4}.j.downsample.{0.weight,1.*}
    encoder.dilated_encoder_blocks.i.conv{n}.{0,1}.* -> encoder.blocks.i.{conv{n},norm{n}}.*
    encoder.{lateral,fpn}_{conv,norm}.*, decoder.*, pixel_mean, pixel_std: unchanged
    anchor_generator.cell_anchors.0: dropped (checked against ours)
    CSP-D-53 (yolof.cspdarknet53.*): backbone.* unchanged (models/cspdarknet.py uses the official names)

The preset (R50/R101 C5/DC5, X101-64x4d C5) is recognised from the shapes, and the written
checkpoint carries the matching resolved config, so ``eval.py --weight OUT``
needs no ``--config``, and (for the 80-class COCO models) COCO's class names in label order,
so that fine-tuning (``train.init_from``, models/finetune.py) keeps the rows of the classes a
dataset shares with COCO.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Mapping

import torch

if __package__ in (None, ""):  # python tools/<name>.py: the repository root on sys.path (tools/_bootstrap.py)
    import _bootstrap  # noqa: F401

from config import config_to_dict, load_config
from data.coco import COCO_CLASSES
from models import build_model
from utils.checkpoint import save_checkpoint
from utils.paths import REPO_ROOT

_RULES = [
    (re.compile(r"^backbone\.stem\.conv1\.weight$"), "backbone.conv1.weight"),
    (re.compile(r"^backbone\.stem\.conv1\.norm\.(\w+)$"), r"backbone.bn1.\1"),
    (re.compile(r"^backbone\.res([2-5])\.(\d+)\.conv(\d)\.weight$"), None),
    (re.compile(r"^backbone\.res([2-5])\.(\d+)\.conv(\d)\.norm\.(\w+)$"), None),
    (re.compile(r"^backbone\.res([2-5])\.(\d+)\.shortcut\.weight$"), None),
    (re.compile(r"^backbone\.res([2-5])\.(\d+)\.shortcut\.norm\.(\w+)$"), None),
    (re.compile(r"^encoder\.dilated_encoder_blocks\.(\d+)\.conv(\d)\.0\.(\w+)$"), r"encoder.blocks.\1.conv\2.\3"),
    (re.compile(r"^encoder\.dilated_encoder_blocks\.(\d+)\.conv(\d)\.1\.(\w+)$"), r"encoder.blocks.\1.norm\2.\3"),
    (re.compile(r"^(encoder\.(lateral|fpn)_(conv|norm)\.\w+)$"), r"\1"),
    (re.compile(r"^(decoder\.\w+(\.\d+)?\.\w+)$"), r"\1"),
    (re.compile(r"^(pixel_mean|pixel_std)$"), r"\1"),
]
_DROPPED = re.compile(r"^anchor_generator\.cell_anchors\.\d+$")


def convert_key(key: str) -> str | None:
    """Our name for an official key; None for keys that are dropped. Raises on unknown keys."""
    if _DROPPED.match(key):
        return None
    for pattern, repl in _RULES:
        m = pattern.match(key)
        if not m:
            continue
        if repl is not None:
            return pattern.sub(repl, key)
        stage = int(m.group(1)) - 1  # res2 -> layer1
        block = m.group(2)
        if "shortcut" in key:
            return f"backbone.layer{stage}.{block}.downsample." + ("0.weight" if key.endswith("shortcut.weight")
                                                                   else f"1.{m.group(3)}")
        conv = m.group(3)
        if key.endswith(f"conv{conv}.weight"):
            return f"backbone.layer{stage}.{block}.conv{conv}.weight"
        return f"backbone.layer{stage}.{block}.bn{conv}.{m.group(4)}"
    raise KeyError(f"official checkpoint key {key!r} has no counterpart in this project")


# CSPDarkNet-53 (yolof.cspdarknet53.*): models/cspdarknet.py keeps the official module names
def is_official_csp(official: Mapping[str, torch.Tensor]) -> bool:
    """True for an official CSP-D-53 checkpoint (its backbone has cross-stage-partial stages)."""
    return any(k.startswith("backbone.layer1.partial_transition1.") for k in official)


def convert_csp_key(key: str) -> str | None:
    """Our name for a key of an official CSP-D-53 checkpoint: ``backbone.*`` unchanged, the head as for ResNets."""
    return key if key.startswith("backbone.") else convert_key(key)


def detect_csp_preset(official: Mapping[str, torch.Tensor]) -> str:
    """3x, 9x and 9x-stage2 are one model (they differ in training only): the 3x preset describes all three."""
    if (int(official["decoder.object_pred.weight"].shape[0]) != 6
            or "backbone.layer5.base_layer.0.weight" not in official):
        raise ValueError("an official CSPDarkNet checkpoint that is not CSP-D-53-DC5 (6 anchors) has no preset here")
    return "yolof_csp_d53_dc5_3x"


def convert_state_dict(official: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(our state dict, dropped entries) from an official YOLOF state dict."""
    ours, dropped = {}, {}
    convert = convert_csp_key if is_official_csp(official) else convert_key
    for k, v in official.items():
        new = convert(k)
        if new is None:
            dropped[k] = torch.as_tensor(v)
        else:
            ours[new] = torch.as_tensor(v)
    return ours, dropped


def detect_preset(official: Mapping[str, torch.Tensor]) -> str:
    """The config preset that fits an official state dict, recognised from its shapes.

    yolof_r{50,101}_{c5,dc5}_1x or yolof_x101_64x4d_c5_1x: depth from the number of
    res4 blocks, ResNeXt from the grouped 3x3 conv, DC5 from the 6 anchors of the head.
    """
    if is_official_csp(official):
        return detect_csp_preset(official)
    depth = 101 if any(k.startswith("backbone.res4.22.") for k in official) else 50
    num_anchors = int(official["decoder.object_pred.weight"].shape[0])
    conv2 = official["backbone.res2.0.conv2.weight"]
    if int(conv2.shape[0]) // int(conv2.shape[1]) == 64:  # 256 channels in 64 groups of 4
        if depth != 101 or num_anchors != 5:
            raise ValueError("an official ResNeXt checkpoint that is not X101-64x4d-C5 has no preset here")
        return "yolof_x101_64x4d_c5_1x"
    return f"yolof_r{depth}_{'dc5' if num_anchors == 6 else 'c5'}_1x"


def check_anchors(official_anchors: torch.Tensor, ours: torch.Tensor, name: str) -> None:
    """The official cell anchors must be ours. X101's official config lists aspect ratios 0.5/1/2, so its buffer
    holds 15 anchors (size-major) for a 5-anchor head; its square ones (every third, from index 1) must be ours."""
    v = official_anchors.float()
    if v.shape[0] == 3 * ours.shape[0]:
        v = v[1::3]
    if v.shape != ours.shape or not torch.allclose(v, ours):
        raise ValueError(f"{name} = {official_anchors.tolist()} differs from this project's anchors {ours.tolist()}")


def load_official(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"{path}: could not be read as a checkpoint with torch.load(weights_only=True): {e}. "
            "If it holds pickled Python objects, re-save only its state dict ('model') with a trusted environment."
        ) from e
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not (any(k.startswith("backbone.res") for k in obj) or is_official_csp(obj)):
        raise ValueError(f"{path}: does not look like an official YOLOF checkpoint (no 'backbone.res*' keys, "
                         "no CSPDarkNet 'backbone.layer*.partial_transition*' keys)")
    return obj


def convert_checkpoint(src: Path, dst: Path) -> dict:
    official = load_official(src)
    preset = detect_preset(official)
    num_classes = (int(official["decoder.cls_score.weight"].shape[0])
                   // int(official["decoder.object_pred.weight"].shape[0]))
    cfg = load_config(REPO_ROOT / "config" / f"{preset}.yaml", {"model.num_classes": num_classes})
    ours, dropped = convert_state_dict(official)
    model = build_model(cfg)
    for k, v in dropped.items():  # the official anchors must be ours
        check_anchors(v, model.anchor_generator.cell_anchors.cpu(), f"{src}: {k} ({preset})")
    model.load_state_dict(ours, strict=True)
    names = {"class_names": list(COCO_CLASSES)} if num_classes == len(COCO_CLASSES) else {}
    save_checkpoint(dst, {"model": model.state_dict(), "config": config_to_dict(cfg), "source": str(src),
                          "preset": preset, **names})
    return {"preset": preset, "num_keys": len(ours), "dropped": sorted(dropped), "class_names": bool(names)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("official", type=Path, help="official cvpods YOLOF checkpoint (.pth)")
    p.add_argument("output", type=Path, help="where to write this project's checkpoint")
    args = p.parse_args(argv)
    info = convert_checkpoint(args.official, args.output)
    print(f"converted {args.official} ({info['preset']}, {info['num_keys']} tensors) -> {args.output}")


if __name__ == "__main__":
    main()
