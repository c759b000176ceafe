"""The GPU acceptance check: does the training path of this repo work on this GPU, and how fast is it?

    bash scripts/gpu_check.sh                     # = python -m tools.gpu_check (at most ~5 minutes on one GPU)
    python -m tools.gpu_check --device cpu --size 128 160 --batch 2 --precisions fp32,bf16   # the same code on CPU

It prints one table:

* CUDA and cuDNN versions, the GPU's name;
* YOLOF-R50-C5 (seeded random weights, frozen-BN backbone as in the recipe) on a batch of 8 800x1333 images,
  3 SGD steps (lr 1e-4) under fp32, fp16 (with a GradScaler) and bf16 autocast: the first step's loss (the same
  weights and images: only the precision's rounding differs) must agree with fp32's within ``--tolerance``
  (relative, default 2%), the third's within ``--tolerance_after`` (default 10%: on random weights the uniform
  matcher's discrete choices follow the predictions, so small differences change a few positives); training
  images/s and peak memory of each;
* inference FPS at batch 1: fp32, fp16, bf16, channels_last and BatchNorm folded into the convolutions;
* one DDP step on one process (NCCL on CUDA, gloo on CPU) that must equal the plain step;
* a resume on fewer devices: a checkpoint that holds 8 CUDA RNG states and was written by 8 processes continues
  here and finishes.

It exits with status 1 when a check fails. On a machine without CUDA it says so in one line and exits 0.
"""
from __future__ import annotations

import argparse
import copy
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

if __package__ in (None, ""):  # python tools/<name>.py: the repository root on sys.path (tools/_bootstrap.py)
    import _bootstrap  # noqa: F401

from config import load_config
from engine.optim import build_optimizer
from engine.step import train_step
from engine.trainer import RunOptions, fit
from models import build_model
from models.fuse import prepare_for_inference
from utils.script import run_script
from utils.paths import REPO_ROOT
from utils.precision import amp_context

PRECISIONS = {"fp32": "none", "fp16": "fp16", "bf16": "bf16"}
# small steps from random weights, so that 3 of them do not amplify the precisions' rounding into different runs
LR = 1e-4


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batch(n: int, size: tuple[int, int], device: torch.device, seed: int = 0):
    """``n`` random images of ``size`` (0-255) with 4 boxes each, on ``device``."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    images = [(torch.rand(3, h, w, generator=g) * 255).to(device) for _ in range(n)]
    targets = []
    for _ in range(n):
        xy = torch.rand(4, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        wh = 16 + torch.rand(4, 2, generator=g) * torch.tensor([w * 0.35, h * 0.35])
        targets.append({"boxes": torch.cat([xy, xy + wh], 1).to(device),
                        "labels": torch.randint(0, 80, (4,), generator=g).to(device)})
    return images, targets


def _r50(device: torch.device) -> torch.nn.Module:
    cfg = load_config(REPO_ROOT / "config/yolof_r50_c5_1x.yaml", {"model.backbone.weights": "none"})
    torch.manual_seed(0)
    return build_model(cfg).to(device), cfg


def train_precisions(device, size, batch, steps, precisions) -> dict[str, dict]:
    """Per precision: the loss of the last of ``steps`` SGD steps, images/s over the steps after the first, and
    the peak memory (MiB; CUDA only)."""
    base, cfg = _r50(device)
    images, targets = _batch(batch, size, device)
    out = {}
    for name in precisions:
        amp = PRECISIONS[name]
        model = copy.deepcopy(base).train()
        opt = build_optimizer(model, cfg.solver, LR)
        scaler = torch.amp.GradScaler(device.type, init_scale=1024.0) if amp == "fp16" else None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times, losses, skipped = [], [], False
        for _ in range(steps):
            _sync(device)
            t0 = time.perf_counter()
            logs = train_step(model, opt, [(images, targets)], device=device, scaler=scaler, amp=amp)
            _sync(device)
            times.append(time.perf_counter() - t0)
            losses.append(logs["loss"])
            skipped = skipped or logs["skipped"]
        rate = batch * (len(times) - 1) / sum(times[1:]) if len(times) > 1 else batch / times[0]
        memory = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
        out[name] = {"first": losses[0], "loss": losses[-1], "images_per_s": rate, "peak_mib": memory,
                     "skipped": skipped}
        del model, opt
    return out


def inference_fps(device, size, iters, precisions) -> dict[str, float]:
    """Batch-1 FPS of the eval model (post-processing included) in each precision and layout."""
    model, _ = _r50(device)
    model.eval()
    image = _batch(1, size, device)[0]
    variants: dict[str, tuple[torch.nn.Module, str]] = {name: (model, PRECISIONS[name]) for name in precisions}
    variants["channels_last"] = (copy.deepcopy(model).to(memory_format=torch.channels_last), "none")
    variants["bn_folded"] = (prepare_for_inference(copy.deepcopy(model)), "none")
    fps = {}
    for name, (m, amp) in variants.items():
        with torch.no_grad(), amp_context(device, amp):
            for _ in range(2):
                m(image)
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(iters):
                m(image)
            _sync(device)
        fps[name] = iters / (time.perf_counter() - t0)
    return fps


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_step(device: torch.device) -> float:
    """The largest difference between a one-process DDP step and the plain step (NCCL on CUDA, gloo on CPU)."""
    cfg = load_config(REPO_ROOT / "config/small_cpu.yaml")
    torch.manual_seed(0)
    plain = build_model(cfg).to(device)
    twin = copy.deepcopy(plain)
    images, targets = _batch(2, (128, 160), device)
    for t in targets:
        t["labels"] = t["labels"] % cfg.model.num_classes
    train_step(plain, build_optimizer(plain, cfg.solver, 0.01), [(images, targets)], device=device)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(twin, device_ids=[device.index] if device.type == "cuda"
                                                        else None)
        train_step(ddp, build_optimizer(ddp, cfg.solver, 0.01), [(images, targets)], device=device)
    finally:
        torch.distributed.destroy_process_group()
    a, b = plain.state_dict(), twin.state_dict()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def resume_on_fewer(device: torch.device) -> int:
    """A short quickstart-size run checkpointed "by 8 processes" (8 CUDA RNG states) resumes here to its end;
    returns its final iteration."""
    small = ["data.synthetic.num_train=16", "data.synthetic.num_val=4", "data.synthetic.image_size=[64, 64]",
             "data.train_min_size=[64]", "data.train_max_size=64", "data.test_min_size=64", "data.test_max_size=64",
             "solver.batch_size=8", "solver.reference_batch_size=8", "solver.max_iter=4", "solver.steps=[3]",
             "solver.warmup_iters=1", "data.num_workers=0"]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(REPO_ROOT / "config/small_cpu.yaml", [f"data.root={tmp}/data", *small])
        fit(cfg, RunOptions(Path(tmp) / "run", device=device, max_iter=2, progress=False))
        path = Path(tmp) / "run" / "last.pth"
        state = torch.load(path, weights_only=True)
        state["rng"]["cuda"] = [torch.cuda.get_rng_state(device) if device.type == "cuda" else
                                torch.zeros(16, dtype=torch.uint8)] * 8
        state["world_size"] = 8
        torch.save(state, path)
        return int(fit(cfg, RunOptions(Path(tmp) / "run", device=device, resume="auto", progress=False))["iteration"])


def _row(rows: list, check: str, result: str, ok: bool = True) -> None:
    rows.append((check, result, "ok" if ok else "FAIL"))


def _guard(rows: list, check: str, fn: Callable[[], None]) -> None:
    """Run one check; an exception is its failure (the table still prints)."""
    try:
        fn()
    except Exception as e:  # the check failed: report it in the table, keep going
        _row(rows, check, f"{type(e).__name__}: {e}"[:200], ok=False)


def run_checks(device, size, batch, steps, iters, precisions, tolerance,
               tolerance_after) -> list[tuple[str, str, str]]:
    rows: list = []
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        _row(rows, "GPU", f"{name}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
                          f"torch {torch.__version__}")

    def training():
        res = train_precisions(device, size, batch, steps, precisions)
        ref = res[precisions[0]]
        for name, r in res.items():
            first, last = r["first"] / ref["first"] - 1, r["loss"] / ref["loss"] - 1
            agree = abs(first) <= tolerance and abs(last) <= tolerance_after and not r["skipped"]
            _row(rows, f"train {name} (R50-C5, {batch}x{size[0]}x{size[1]}, {steps} steps)",
                 f"loss step 1 {r['first']:.4f} ({first * 100:+.2f}%), step {steps} {r['loss']:.4f} "
                 f"({last * 100:+.2f}% vs {precisions[0]}), {r['images_per_s']:.1f} img/s, "
                 f"peak {r['peak_mib']:.0f} MiB", agree)

    def inference():
        for name, fps in inference_fps(device, size, iters, precisions).items():
            _row(rows, f"inference {name} (batch 1, {size[0]}x{size[1]})", f"{fps:.1f} FPS")

    def ddp():
        diff = ddp_step(device)
        _row(rows, f"DDP step, 1 process ({'NCCL' if device.type == 'cuda' else 'gloo'})",
             f"max |DDP - plain| = {diff:.2e}", diff < 1e-5)

    def resume():
        it = resume_on_fewer(device)
        _row(rows, "resume a checkpoint of 8 processes / 8 CUDA RNG states here", f"finished at iteration {it}",
             it == 4)

    for check, fn in (("training", training), ("inference", inference), ("DDP", ddp), ("resume", resume)):
        _guard(rows, check, fn)
    return rows


def format_table(rows) -> str:
    width = max(len(r[0]) for r in rows)
    lines = [f"| {'check'.ljust(width)} | result | |", f"|{'-' * (width + 2)}|---|---|"]
    lines += [f"| {c.ljust(width)} | {r} | {s} |" for c, r, s in rows]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (the same checks, small)")
    p.add_argument("--size", type=int, nargs=2, default=(800, 1333), metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--iters", type=int, default=20, help="timed inference runs per variant")
    p.add_argument("--precisions", default="fp32,fp16,bf16", help="comma-separated, fp32 first")
    p.add_argument("--tolerance", type=float, default=0.02, help="relative difference of the first step's loss "
                   "allowed vs fp32")
    p.add_argument("--tolerance_after", type=float, default=0.10, help="relative difference of the last step's "
                   "loss allowed vs fp32")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here (torch.cuda.is_available() is False): nothing to check")
        return 0
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", device.index or 0)
        torch.cuda.set_device(device)
    rows = run_checks(device, tuple(args.size), args.batch, args.steps, args.iters, args.precisions.split(","),
                      args.tolerance, args.tolerance_after)
    print(format_table(rows))
    failed = [r for r in rows if r[2] != "ok"]
    if failed:
        print(f"gpu_check: {len(failed)} check(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(run_script(main))
