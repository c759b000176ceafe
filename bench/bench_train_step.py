"""Training-step speed of YOLOF-R50-C5 against the bare torchvision ResNet-50 body.

    python bench/bench_train_step.py [--device cpu|cuda] [--amp bf16|fp16]

One step = forward, matching, loss, backward and the SGD step, at batch 2 x
3x512x512 with 3 boxes per image. The reference is forward + backward + SGD
step of conv1..layer4 of torchvision's ResNet-50 with frozen BN and the stem
and first stage frozen (as in YOLOF), in its fastest memory format. Also
reports the share of the step spent in matching + loss.
"""
from __future__ import annotations

import argparse
import contextlib
import time

import torch

from common import REPO, median_time, resnet50_body, sync

from config import load_config
from models import build_model
from engine.optim import build_optimizer
from engine.step import train_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", default="none", choices=["none", "fp16", "bf16"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--size", type=int, default=512)
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    n = 2
    images = [torch.rand(3, args.size, args.size, device=device) * 255 for _ in range(n)]
    boxes = torch.tensor([[40.0, 60.0, 200.0, 220.0], [250.0, 100.0, 480.0, 300.0], [100.0, 300.0, 160.0, 420.0]])
    targets = [{"boxes": boxes.to(device), "labels": torch.tensor([1, 5, 9], device=device)} for _ in range(n)]
    print(f"device {device}, threads {torch.get_num_threads()}, batch {n} x 3x{args.size}x{args.size}, amp {args.amp}")
    amp_ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16 if args.amp == "bf16" else torch.float16)) \
        if args.amp != "none" and device.type == "cuda" else contextlib.nullcontext

    # --- reference: the body, frozen BN, stem + layer1 frozen
    body_times = {}
    for fmt in (torch.contiguous_format, torch.channels_last):
        body = resnet50_body(frozen=True).to(device).to(memory_format=fmt)
        for mod in list(body)[:5]:
            for prm in mod.parameters():
                prm.requires_grad_(False)
        opt = torch.optim.SGD([q for q in body.parameters() if q.requires_grad], lr=0.01, momentum=0.9)
        xb = ((torch.stack(images) - 110) / 60).contiguous(memory_format=fmt)

        def body_step():
            opt.zero_grad(set_to_none=True)
            with amp_ctx():
                out = body(xb)
            out.float().mean().backward()
            opt.step()

        body_times[str(fmt).split(".")[-1]] = median_time(body_step, device, repeats=args.repeats)
    best_fmt = min(body_times, key=body_times.get)

    # --- YOLOF step, timing matching + loss separately
    cfg = load_config(REPO / "config/yolof_r50_c5_1x.yaml")
    results = {}
    for fmt in (torch.contiguous_format, torch.channels_last):
        model = build_model(cfg).to(device).to(memory_format=fmt)
        opt = build_optimizer(model, cfg.solver, 0.01)
        spent = {"t": 0.0}
        inner_match, inner_crit = model.assigner, model.criterion  # label assignment (matcher included), loss

        class Timed:
            def __init__(self, fn):
                self.fn = fn

            def __getattr__(self, name):
                return getattr(self.fn, name)

            def __call__(self, *a, **k):
                sync(device)
                t = time.perf_counter()
                out = self.fn(*a, **k)
                sync(device)
                spent["t"] += time.perf_counter() - t
                return out

        model.assigner, model.criterion = Timed(inner_match), Timed(inner_crit)

        def yolof_step():
            train_step(model, opt, [(images, targets)], device=device, normalization="batch", amp=args.amp)

        spent["t"] = 0.0
        total = median_time(yolof_step, device, repeats=args.repeats)
        # matching + loss forward time per step (averaged over all timed calls, warm-up included)
        match_loss = spent["t"] / (args.repeats + 2)
        results[str(fmt).split(".")[-1]] = (total, match_loss)
    best = min(results, key=lambda k: results[k][0])
    total, match_loss = results[best]
    print("resnet50 body step: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in body_times.items()) + f" (best {best_fmt})")
    for k, (t, m) in results.items():
        print(f"yolof step ({k}): {t * 1000:.0f} ms, ratio {t / body_times[best_fmt]:.2f}, matching+loss {m * 1000:.1f} ms ({100 * m / t:.1f}%)")
    print(f"RESULT step ratio {total / body_times[best_fmt]:.2f} (target <= 1.30), matching+loss share "
          f"{100 * match_loss / total:.1f}% (target < 5%)")


if __name__ == "__main__":
    main()
