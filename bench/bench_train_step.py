"""Training-step speed of YOLOF-R50-C5 against the bare torchvision ResNet-50 body.

    python -m bench.bench_train_step [--device cpu|cuda] [--amp bf16|fp16]

One step = forward, matching, loss, backward and the SGD step, at batch 2 x
3x512x512 with 3 boxes per image. The reference is forward + backward + SGD
step of conv1..layer4 of torchvision's ResNet-50 with frozen BN and the stem
and first stage frozen (as in YOLOF), in its fastest memory format. Also
reports the share of the step spent in matching + loss.
"""
from __future__ import annotations

import argparse
import time

import torch

from config import load_config
from deploy.timing import median_time, resnet50_body, sync
from engine.optim import build_optimizer
from engine.step import train_step
from models import build_model
from utils.paths import REPO_ROOT as REPO
from utils.precision import AMP_MODES, amp_context

FORMATS = {"contiguous_format": torch.contiguous_format, "channels_last": torch.channels_last}


def body_step_times(images: list[torch.Tensor], device: torch.device, *, amp: str, repeats: int) -> dict[str, float]:
    """Memory format -> median step time of the reference: the body, frozen BN, stem + layer1 frozen."""
    times = {}
    for name, fmt in FORMATS.items():
        body = resnet50_body(frozen=True).to(device).to(memory_format=fmt)
        for mod in list(body)[:5]:
            for prm in mod.parameters():
                prm.requires_grad_(False)
        opt = torch.optim.SGD([q for q in body.parameters() if q.requires_grad], lr=0.01, momentum=0.9)
        xb = ((torch.stack(images) - 110) / 60).contiguous(memory_format=fmt)

        def body_step():
            opt.zero_grad(set_to_none=True)
            with amp_context(device, amp):
                out = body(xb)
            out.float().mean().backward()
            opt.step()

        times[name] = median_time(body_step, device, repeats=repeats)
    return times


class Timed:
    """Wraps a callable (the label assigner, the criterion) and adds the time of each call to ``spent["t"]``."""

    def __init__(self, fn, device: torch.device, spent: dict):
        self.fn, self.device, self.spent = fn, device, spent

    def __getattr__(self, name):
        return getattr(self.fn, name)

    def __call__(self, *a, **k):
        sync(self.device)
        t = time.perf_counter()
        out = self.fn(*a, **k)
        sync(self.device)
        self.spent["t"] += time.perf_counter() - t
        return out


def yolof_step_times(images, targets, device: torch.device, *, amp: str, repeats: int) -> dict[str, tuple]:
    """Memory format -> (median YOLOF-R50-C5 step time, matching + loss forward time per step)."""
    cfg = load_config(REPO / "config/yolof_r50_c5_1x.yaml")
    results = {}
    for name, fmt in FORMATS.items():
        model = build_model(cfg).to(device).to(memory_format=fmt)
        opt = build_optimizer(model, cfg.solver, 0.01)
        spent = {"t": 0.0}
        model.assigner, model.criterion = Timed(model.assigner, device, spent), Timed(model.criterion, device, spent)

        def yolof_step():
            train_step(model, opt, [(images, targets)], device=device, normalization="batch", scaler=None, amp=amp)

        total = median_time(yolof_step, device, repeats=repeats)
        # matching + loss forward time per step (averaged over all timed calls, warm-up included)
        results[name] = (total, spent["t"] / (repeats + 2))
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", default="none", choices=AMP_MODES)
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
    body_times = body_step_times(images, device, amp=args.amp, repeats=args.repeats)
    best_fmt = min(body_times, key=body_times.get)
    results = yolof_step_times(images, targets, device, amp=args.amp, repeats=args.repeats)
    total, match_loss = results[min(results, key=lambda k: results[k][0])]
    print("resnet50 body step: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in body_times.items())
          + f" (best {best_fmt})")
    for k, (t, m) in results.items():
        print(f"yolof step ({k}): {t * 1000:.0f} ms, ratio {t / body_times[best_fmt]:.2f}, "
              f"matching+loss {m * 1000:.1f} ms ({100 * m / t:.1f}%)")
    print(f"RESULT step ratio {total / body_times[best_fmt]:.2f} (target <= 1.30), matching+loss share "
          f"{100 * match_loss / total:.1f}% (target < 5%)")


if __name__ == "__main__":
    main()
