"""Calibrate the mixed-precision tolerances: how far the first training step's loss under bf16 / fp16 autocast lies
from fp32's on the same weights and images, over seeds (the weights' and the images').

    python -m bench.calibrate_amp --case tiny_step                  # tests/engine/test_step.py's AMP_STEP_BOUND
    python -m bench.calibrate_amp --case gpu_check [--device cuda]  # tools/gpu_check's TOLERANCE at its size

Prints, per precision, every seed's relative difference and the largest; the tolerances are a few times the
largest (docs/training.md, "Mixed precision: the tolerances", records each calibration with its date and machine).
"""
from __future__ import annotations

import argparse

import torch

from engine.optim import build_optimizer
from engine.step import train_step
from models import build_model
from tests.helpers import batch, tiny_cfg
from tools.gpu_check import training
from tools.gpu_check.__main__ import PROFILES


def tiny_step(seed: int, precisions) -> dict[str, float]:
    """The TINY test model and batch of tests/engine/test_step.py (labels fixed: training.FIXED_LABELS), weights
    and images seeded with ``seed``."""
    out = {}
    cfg = tiny_cfg(**training.FIXED_LABELS)
    for mode in ("none", *precisions):
        torch.manual_seed(seed)
        model = build_model(cfg)
        opt = build_optimizer(model, cfg.solver, 0.01)
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0) if mode == "fp16" else None
        out[mode] = train_step(model, opt, [batch(2, seed)], device=torch.device("cpu"), scaler=scaler,
                               amp=mode)["loss"]
    return {name: out[name] / out["none"] - 1 for name in precisions}


def gpu_check(seed: int, precisions, device: torch.device, size=None, n=None) -> dict[str, float]:
    p = PROFILES[device.type]
    losses = training.first_step_losses(device, size or p["size"], n or p["batch"], ["fp32", *precisions], seed)
    return {name: losses[name] / losses["fp32"] - 1 for name in precisions}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", choices=("tiny_step", "gpu_check"), required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="gpu_check: the image size (default: its profile's for the device)")
    p.add_argument("--batch", type=int, default=None, help="gpu_check: images (default: its profile's)")
    args = p.parse_args()
    device = torch.device(args.device)
    precisions = ("bf16", "fp16")
    spreads: dict[str, list[float]] = {name: [] for name in precisions}
    for seed in range(args.seeds):
        diffs = tiny_step(seed, precisions) if args.case == "tiny_step" else \
            gpu_check(seed, precisions, device, args.size and tuple(args.size), args.batch)
        for name, d in diffs.items():
            spreads[name].append(d)
        print(f"seed {seed}: " + ", ".join(f"{k} {v:+.2e}" for k, v in diffs.items()), flush=True)
    for name, values in spreads.items():
        print(f"RESULT {args.case} {device.type} {name}: largest |relative difference| "
              f"{max(abs(v) for v in values):.2e} over {len(values)} seeds")


if __name__ == "__main__":
    main()
