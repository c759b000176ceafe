"""The GPU acceptance check: does this repo's training path work on this GPU, and how fast is it?

    bash scripts/gpu_check.sh [--wheels DIR] [--out DIR]      # on the GPU node, with the node's own python3
    python -m tools.gpu_check --device cpu --out /tmp/check   # the same checks, small, on the CPU (CI runs it)

Parts, each with its own time budget, each row printed the moment it is measured (and the table so far written
to OUT/gpu_check.json and OUT/gpu_check.md):

1. environment: the GPU, torch and its CUDA / cuDNN, the driver;
2. AMP parity: YOLOF-R50-C5 (seeded random weights) on one batch, the first step's loss under fp16 (GradScaler)
   and bf16 against fp32 (TF32 off), within tolerances calibrated from measured spreads (docs/training.md);
   training images/s and peak memory of each precision;
3. MFU: FLOPs of a training step per image (torch.utils.flop_counter), achieved TFLOP/s under bf16 and the share
   of the GPU's dense bf16 peak (tools/gpu_check/peaks.py);
4. the Trainer itself: about 100 iterations of the R50-C5 recipe under bf16 on a COCO-layout set written from
   tests/assets, DataLoader workers with pinned memory, one evaluation: finite losses, images/s, the share of the
   time spent waiting for data;
5. collectives on a 1-process NCCL group: the checkpoint-bytes broadcast, sync_model, the non-finite agreement,
   a DDP step equal to the plain step;
6. with 2 or more GPUs: a 2-process torchrun run with a worker killed and restarted, ending as an uninterrupted run;
7. inference images/s at 800x1333, batch 1 and 8: fp32, fp16, bf16, channels_last, folded norms (paper: 32 FPS).

Exit status: 0 when every check passed, 1 when one failed, 3 when there is no usable CUDA device (one line saying
why; nothing was checked). ``--device cpu`` runs every part small on the CPU (gloo for the collectives).
"""
from __future__ import annotations

import argparse
import math
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
import torchvision

if __package__ in (None, ""):  # python tools/<name>.py: the repository root on sys.path (tools/_bootstrap.py)
    import _bootstrap  # noqa: F401

from tools.gpu_check import distributed, inference, training
from tools.gpu_check.peaks import bf16_peak_tflops
from tools.gpu_check.report import FAIL, INFO, SKIP, PartTimeout, Report, time_budget
from utils.gpu_info import driver_versions, why_no_cuda

# (first-step loss under AMP / fp32's) - 1, allowed: a few times the largest spread `python -m bench.calibrate_amp`
# measured over seeds for each device type (docs/training.md, "Mixed precision: the tolerances")
TOLERANCE = {"cuda": {"fp16": 0.008, "bf16": 0.04}, "cpu": {"fp16": 0.006, "bf16": 0.015}}
NO_CUDA_EXIT = 3


PROFILES = {  # what each part measures on a GPU, and small on a CPU; seconds each part may take
    "cuda": dict(size=(800, 1333), batch=8, steps=10, trainer_iters=100, trainer_batch=8, workers=8,
                 infer_size=(800, 1333), infer_batches=(1, 8), infer_iters=20,
                 budget=dict(environment=30, parity=90, mfu=45, trainer=180, collectives=45, elastic=150,
                             inference=90)),
    "cpu": dict(size=(128, 160), batch=2, steps=1, trainer_iters=4, trainer_batch=2, workers=2,
                infer_size=(128, 160), infer_batches=(1, 2), infer_iters=1,
                budget=dict(environment=30, parity=120, mfu=60, trainer=240, collectives=60, elastic=300,
                            inference=120)),
}


def environment(report: Report, device: torch.device) -> None:
    if device.type == "cuda":
        driver, driver_cuda = driver_versions()
        report.add("GPU", f"{torch.cuda.get_device_name(device)}, {torch.cuda.device_count()} visible, "
                          f"{torch.cuda.get_device_properties(device).total_memory / 2**30:.0f} GiB", INFO)
        report.add("software", f"torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN "
                               f"{torch.backends.cudnn.version()}), torchvision {torchvision.__version__}, driver "
                               f"{driver or '?'} (CUDA {driver_cuda or '?'}), Python {platform.python_version()}",
                   INFO)
    else:
        report.add("CPU", f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
                          f"{torch.__version__}, torchvision {torchvision.__version__}", INFO)


def parity(report: Report, device, p: dict, measured: dict) -> None:
    precisions = ["fp32", "fp16", "bf16"]
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        precisions.remove("bf16")
        report.add("bf16", "this GPU has no bf16", SKIP)
    size, n = p["size"], p["batch"]
    losses = training.first_step_losses(device, size, n, precisions)
    report.add(f"first-step loss fp32 (R50-C5, {n}x{size[0]}x{size[1]})", f"{losses['fp32']:.5f}", INFO)
    for name in precisions[1:]:
        rel = losses[name] / losses["fp32"] - 1
        tol = TOLERANCE[device.type][name]
        report.check(f"first-step loss {name} vs fp32", f"{losses[name]:.5f} ({rel * 100:+.3f}%)",
                     math.isfinite(rel) and abs(rel) <= tol, f"within {tol * 100:g}%")
    for name in precisions if device.type == "cuda" else ("fp32", "bf16"):  # fp16 on a CPU is emulated: slow
        r = training.throughput(device, size, n, name, p["steps"])
        measured[name] = r
        memory = f", peak {r['peak_mib']:.0f} MiB" if math.isfinite(r["peak_mib"]) else ""
        report.add(f"training {name}, batch {n}", f"{r['images_per_s']:.1f} img/s{memory}", INFO)


def mfu(report: Report, device, p: dict, measured: dict) -> None:
    flops = training.train_flops_per_image(device, p["size"])
    report.add(f"training FLOPs per image ({p['size'][0]}x{p['size'][1]}, forward + backward)",
               f"{flops / 1e9:.0f} GFLOP", INFO)
    best = measured.get("bf16") or measured.get("fp32")
    if best is None:
        report.add("MFU", "no throughput measured (the parity part did not finish)", SKIP)
        return
    achieved = flops * best["images_per_s"] / 1e12
    peak = bf16_peak_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    share = f", {100 * achieved / peak:.1f}% of the dense bf16 peak {peak:g} TFLOP/s" if peak else \
        " (no bf16 peak known for this device)"
    report.add("MFU (bf16 training)", f"{achieved:.3g} TFLOP/s achieved{share}", INFO)


def trainer(report: Report, device, p: dict, tmp: Path) -> None:
    amp = "bf16" if device.type != "cuda" or torch.cuda.is_bf16_supported() else "fp16"
    r = training.trainer_run(device, tmp / "trainer", size=p["size"], batch_size=p["trainer_batch"],
                             iters=p["trainer_iters"], workers=p["workers"], amp=amp)
    report.check(f"Trainer, {p['trainer_iters']} iterations under {amp}, batch {p['trainer_batch']}, "
                 f"{r['workers']} workers{', pinned memory' if r['pinned'] else ''}",
                 f"iteration {r['iterations']}, {r['images_per_s']:.1f} img/s, {100 * r['data_wait_share']:.0f}% "
                 f"of the time waiting for data",
                 r["iterations"] == p["trainer_iters"] and r["finite"] and not r["rollbacks"],
                 "every loss finite, no rollback")
    report.check("Trainer's evaluation", f"AP50 {r['AP50']} in {r['eval_s']:.1f} s", r["AP50"] is not None,
                 "an evaluated final record")


def collectives(report: Report, device) -> None:
    r = distributed.collectives(device)
    name = r["backend"].upper() if r["backend"] == "nccl" else r["backend"]
    report.check(f"{name}: checkpoint bytes broadcast", f"{r['broadcast_mib']:.1f} MiB", r["broadcast_equal"],
                 "bytes equal")
    report.check(f"{name}: sync_model (buffers, EMA)", "ran", r["sync_model_kept"], "rank 0's values kept")
    report.check(f"{name}: non-finite agreement", "NonFiniteLossError on every rank" if r["nonfinite_agreed"]
                 else "no error", r["nonfinite_agreed"], "a NaN loss is refused before the step")
    report.check(f"{name}: DDP step vs plain step", f"largest difference {r['ddp_max_diff']:.1e}",
                 r["ddp_max_diff"] < 1e-5, "< 1e-5")


def elastic(report: Report, device, tmp: Path) -> None:
    if device.type == "cuda" and torch.cuda.device_count() < 2:
        report.add("2-process torchrun, a worker killed and restarted", "needs 2 GPUs", SKIP)
        return
    r = distributed.elastic_restart(device, tmp / "elastic")
    a, b = r["uninterrupted"], r["killed"]
    if device.type == "cuda":  # cuDNN's backward kernels may sum in another order from run to run
        same, criterion = a["iteration"] == b["iteration"] and abs(b["loss"] / a["loss"] - 1) <= 1e-3, \
            "same final iteration, loss within 0.1%"
    else:
        same, criterion = a == b, "the same final record"
    report.check("2-process torchrun, rank 1 killed at step 4, elastic restart",
                 f"iteration {b['iteration']} (uninterrupted {a['iteration']}), loss {b['loss']:.5f} vs "
                 f"{a['loss']:.5f}", same and r["killed_restarted"], criterion)


def inference_part(report: Report, device, p: dict) -> None:
    precisions = ["fp32", "fp16", "bf16"] if device.type == "cuda" else ["fp32", "bf16"]
    for b in p["infer_batches"]:
        fps = inference.inference_fps(device, p["infer_size"], b, p["infer_iters"], precisions)
        shown = ", ".join(f"{k} {v:.1f}" for k, v in fps.items())
        report.add(f"inference img/s, batch {b}, {p['infer_size'][0]}x{p['infer_size'][1]}",
                   f"{shown} (paper: {inference.PAPER_FPS} FPS on a 2080Ti)", INFO)


def run(device: torch.device, out: Optional[Path]) -> Report:
    p = PROFILES[device.type]
    report = Report(out, {"gpu_check": time.strftime("%Y-%m-%d %H:%M:%S"), "device": str(device)})
    measured: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        parts = (("environment", lambda: environment(report, device)),
                 ("parity", lambda: parity(report, device, p, measured)),
                 ("mfu", lambda: mfu(report, device, p, measured)),
                 ("trainer", lambda: trainer(report, device, p, Path(tmp))),
                 ("collectives", lambda: collectives(report, device)),
                 ("elastic", lambda: elastic(report, device, Path(tmp))),
                 ("inference", lambda: inference_part(report, device, p)))
        for name, part in parts:
            report.start(name)
            try:
                with time_budget(p["budget"][name]):
                    part()
            except (PartTimeout, Exception) as e:  # a part that fails is a failed row; the others still run
                report.add(f"{name} did not finish", f"{type(e).__name__}: {e}"[:300], FAIL)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.gpu_check", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (the same checks, small)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for gpu_check.json and gpu_check.md (default runs/gpu_check/<date-time>)")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device: nothing was checked ({why_no_cuda()})")
        return NO_CUDA_EXIT
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", device.index or 0)
        torch.cuda.set_device(device)
    out = args.out or Path("runs/gpu_check") / time.strftime("%Y%m%d-%H%M%S")
    report = run(device, out)
    failed = report.failed()
    print(f"gpu_check: {len(report.rows)} rows, {len(failed)} failed; the table is in {out}/gpu_check.md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
