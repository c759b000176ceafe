"""Parameters, MACs / FLOPs per part and activation memory of a YOLOF preset, measured on one forward.

    python -m tools.complexity --config config/yolof_r50_c5_1x.yaml [--size 800 1216]
    python -m tools.complexity --config config/quickstart.yaml --size 256 256

MACs and FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs = 2 x MACs
for convolutions and matmuls; element-wise ops, normalisation and post-processing are
not counted, as in every published detector FLOP count). The forward runs on the
``meta`` device: shapes only, no arithmetic, so any preset at any size takes seconds.
Activation memory: the bytes of every leaf module's output in one fp32 forward of
batch 1 (what a training step keeps for backward, roughly) and the largest single one.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

if __package__ in (None, ""):  # python tools/<name>.py: the repository root on sys.path (tools/_bootstrap.py)
    import _bootstrap  # noqa: F401

from config import load_config
from models import build_model
from utils.script import run_script

PARTS = ("backbone", "encoder", "decoder")


def _leaf_output_bytes(model: torch.nn.Module) -> tuple[list, list[int]]:
    """Forward hooks on every leaf module that record its output's size in bytes."""
    sizes: list[int] = []

    def hook(_module, _inputs, output):
        outs = output if isinstance(output, (tuple, list)) else (output,)
        sizes.extend(o.numel() * o.element_size() for o in outs if isinstance(o, torch.Tensor))

    leaves = [m for m in model.modules() if not list(m.children())]
    return [m.register_forward_hook(hook) for m in leaves], sizes


@torch.no_grad()
def complexity(model: torch.nn.Module, height: int, width: int) -> dict:
    """{"params", "trainable", "parts": {part: {"macs", "flops"}}, "macs", "flops", "activation_bytes",
    "largest_activation_bytes"} for one (1, 3, height, width) image through backbone, encoder and decoder."""
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model = model.to("meta").eval()
    handles, sizes = _leaf_output_bytes(model)
    x = torch.empty(1, 3, height, width, device="meta")
    parts = {}
    try:
        for name in PARTS:
            with FlopCounterMode(display=False) as counter:
                x = getattr(model, name)(x)
            flops = counter.get_total_flops()
            parts[name] = {"macs": flops // 2, "flops": flops}
    finally:
        for h in handles:
            h.remove()
    return {"params": params, "trainable": trainable, "parts": parts,
            "macs": sum(p["macs"] for p in parts.values()), "flops": sum(p["flops"] for p in parts.values()),
            "activation_bytes": sum(sizes), "largest_activation_bytes": max(sizes)}


def format_report(name: str, size: tuple[int, int], c: dict) -> str:
    """The printout of :func:`complexity`'s result ``c`` for preset ``name`` at ``size`` (h, w)."""
    lines = [f"{name} at 1x3x{size[0]}x{size[1]}",
             f"parameters: {c['params']:,} total, {c['trainable']:,} trainable"]
    for part, v in c["parts"].items():
        lines.append(f"{part:9s} {v['macs'] / 1e9:8.2f} GMACs {v['flops'] / 1e9:8.2f} GFLOPs")
    lines.append(f"{'total':9s} {c['macs'] / 1e9:8.2f} GMACs {c['flops'] / 1e9:8.2f} GFLOPs "
                 "(torch.utils.flop_counter; conv/matmul only)")
    lines.append(f"activations of one fp32 forward: {c['activation_bytes'] / 2**20:.0f} MiB over all leaf modules, "
                 f"largest {c['largest_activation_bytes'] / 2**20:.0f} MiB")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", "-c", required=True, help="YAML preset under config/")
    p.add_argument("--size", type=int, nargs=2, default=(800, 1216), metavar=("H", "W"), help="input size")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.opts)  # a bad file or key is a one-line ConfigError (run_script)
    result = complexity(build_model(cfg), *args.size)
    print(format_report(Path(args.config).stem, tuple(args.size), result))
    return result


if __name__ == "__main__":
    run_script(main)
