"""Frozen BatchNorm under autocast: the R50-C5 training step with the backbone's frozen norms applied in the input's
dtype (models.layers.FrozenBatchNorm2d) against torchvision's, whose fp32 buffers turn every trunk activation fp32.

    python -m bench.bench_frozen_bn [--amp bf16] [--size 512] [--repeats 5] [--rounds 2]

Each variant runs in a fresh process (so that its peak memory is its own), alternating A, B, A, B for ``--rounds``
rounds back to back. A process builds YOLOF-R50-C5 (random weights, the recipe's frozen stages), takes one warm-up
step and ``--repeats`` timed steps of batch 2 (forward, matching, loss, backward, SGD) under autocast, and reports
the dtype of the stem's frozen norm's and layer2's outputs, the median step time, and its peak resident memory above
the memory it held before the first step (``ru_maxrss``).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torchvision

from config import load_config
from engine.optim import build_optimizer
from engine.step import train_step
from models import build_model
from models.layers import FrozenBatchNorm2d
from utils.paths import REPO_ROOT

VARIANTS = ("input_dtype", "torchvision")


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def child(variant: str, amp: str, size: int, repeats: int) -> dict:
    if variant == "torchvision":
        FrozenBatchNorm2d.forward = torchvision.ops.FrozenBatchNorm2d.forward
    torch.manual_seed(0)
    cfg = load_config(REPO_ROOT / "config/yolof_r50_c5_1x.yaml")
    model = build_model(cfg)
    opt = build_optimizer(model, cfg.solver, 0.01)
    images = [torch.rand(3, size, size) * 255 for _ in range(2)]
    boxes = torch.tensor([[40.0, 60.0, 200.0, 220.0], [250.0, 100.0, 480.0, 300.0], [100.0, 300.0, 160.0, 420.0]])
    targets = [{"boxes": boxes * size / 512, "labels": torch.tensor([1, 5, 9])} for _ in range(2)]
    dtypes = {}
    for name in ("bn1", "layer2"):
        getattr(model.backbone, name).register_forward_hook(
            lambda m, i, o, name=name: dtypes.update({name: str(o.dtype)}))
    rss_before = _rss_mib()
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        train_step(model, opt, [(images, targets)], device=torch.device("cpu"), amp=amp)
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"variant": variant, "step_ms": 1000 * statistics.median(times[1:]), "peak_above_start_mib":
            peak - rss_before, "dtypes": dtypes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--amp", default="bf16", choices=("bf16", "fp16", "none"))
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.amp, args.size, args.repeats)))
        return
    print(f"R50-C5 train step, batch 2 x 3x{args.size}x{args.size}, amp {args.amp}, {torch.get_num_threads()} "
          f"threads, torch {torch.__version__}")
    results: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            out = subprocess.run([sys.executable, "-m", "bench.bench_frozen_bn", "--child", variant, "--amp", args.amp,
                                  "--size", str(args.size), "--repeats", str(args.repeats)], cwd=REPO_ROOT,
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results[variant].append(r)
            print(f"  {variant:12s} step {r['step_ms']:.0f} ms, peak +{r['peak_above_start_mib']:.0f} MiB, "
                  f"activations {r['dtypes']}")
    med = {v: (statistics.median(r["step_ms"] for r in rs), statistics.median(r["peak_above_start_mib"] for r in rs))
           for v, rs in results.items()}
    (t_new, m_new), (t_old, m_old) = med["input_dtype"], med["torchvision"]
    print(f"RESULT input-dtype frozen BN: step {t_new:.0f} ms vs {t_old:.0f} ms (x{t_new / t_old:.2f}), peak "
          f"+{m_new:.0f} MiB vs +{m_old:.0f} MiB (x{m_new / m_old:.2f})")


if __name__ == "__main__":
    main()
