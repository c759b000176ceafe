"""torch.compile (inductor) against eager channels_last: inference and a training step, compile time included.

    python -m bench.bench_compile --what infer_quickstart   # fused quickstart model, a 16 x 3x256x256 eval batch
    python -m bench.bench_compile --what infer_r50          # fused YOLOF-R50-C5, 1x3x800x1216, then two
                                                            # other sizes (random weights)
    python -m bench.bench_compile --what train_quickstart   # train_step of the quickstart preset, batch 16 x 256x256

Each variant is built in this process and its first call (compilation included) timed alone; then all
variants run round-robin (--repeats rounds after one warm-up round, medians reported), so that load
changes on a shared machine hit them alike. ``compiled`` is what ``--compile`` does
(models.compile.compile_model: backbone, encoder and decoder compiled in place; matching, loss and
post-processing stay eager); ``compiled whole`` (--whole) compiles the whole module's forward, for
comparison. "repaid after" is the number of calls after which the compile time is won back.
Inductor caches compiled code on disk (/tmp/torchinductor_$USER): a second run compiles faster.
"""
from __future__ import annotations

import argparse
import time

import torch

from config import load_config
from deploy.timing import interleaved_medians
from engine.optim import build_optimizer
from engine.step import train_step
from models import build_model
from models.compile import compile_model
from models.fuse import prepare_for_inference
from utils.paths import REPO_ROOT as REPO


def first_call(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def report(fns: dict, repeats: int) -> None:
    """First-call time of each variant (in order), then their interleaved medians against the first (eager)."""
    first = {name: first_call(fn) for name, fn in fns.items()}
    median = interleaved_medians(fns, torch.device("cpu"), warmup=1, repeats=repeats)
    eager = median[next(iter(fns))]
    for name in fns:
        line = f"{name:22s} first call {first[name]:7.2f} s   median {median[name] * 1000:8.1f} ms"
        if name != next(iter(fns)):
            gain = eager - median[name]
            line += f"   x eager {median[name] / eager:.2f}"
            line += (f"   compile repaid after {(first[name] - median[name]) / gain:.0f} calls" if gain > 0
                     else "   never repaid")
        print(line, flush=True)


def _variants(whole: bool) -> tuple[str, ...]:
    return ("eager channels_last", "compiled") + (("compiled whole",) if whole else ())


def _compile(model, name: str):
    if name == "compiled":
        compile_model(model)
    elif name == "compiled whole":
        model.compile()
    return model


def bench_inference(cfg_path: str, overrides: dict, batch: int, sizes: list[tuple[int, int]], repeats: int,
                    whole: bool) -> None:
    """One report per input size, in order, on the same models: a later size shows the cost of a new shape
    (a recompilation, then dynamic-shape code), as an evaluation over images of many sizes sees it."""
    cfg = load_config(REPO / cfg_path, overrides)
    models = {name: _compile(prepare_for_inference(build_model(cfg).eval()), name) for name in _variants(whole)}
    for size in sizes:
        torch.manual_seed(0)
        images = [torch.rand(3, *size) * 255 for _ in range(batch)]
        print(f"input {batch} x 3x{size[0]}x{size[1]}")

        @torch.no_grad()
        def run(model, images=images):
            model(images)

        report({name: (lambda m=m: run(m)) for name, m in models.items()}, repeats)


def bench_train(repeats: int, whole: bool) -> None:
    cfg = load_config(REPO / "config/quickstart.yaml")
    torch.manual_seed(0)
    images = [torch.rand(3, 256, 256) * 255 for _ in range(16)]
    targets = []
    for i in range(16):
        n = 1 + i % 4
        xy = torch.rand(n, 2) * 160
        wh = 24 + torch.rand(n, 2) * 72
        targets.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(0, 5, (n,))})
    fns = {}
    for name in _variants(whole):
        torch.manual_seed(0)
        model = _compile(build_model(cfg).to(memory_format=torch.channels_last), name)
        opt = build_optimizer(model, cfg.solver, 1e-4)

        def step(model=model, opt=opt):
            train_step(model, opt, [(images, targets)], device=torch.device("cpu"), clip_grad_norm=10.0)

        fns[name] = step
    report(fns, repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--what", choices=["infer_quickstart", "infer_r50", "train_quickstart"], required=True)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--whole", action="store_true", help="also compile the whole module's forward")
    args = p.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.what}")
    if args.what == "infer_quickstart":
        bench_inference("config/quickstart.yaml", {}, 16, [(256, 256)], args.repeats, args.whole)
    elif args.what == "infer_r50":
        bench_inference("config/yolof_r50_c5_1x.yaml", {}, 1, [(800, 1216), (800, 1088), (800, 1344)], args.repeats,
                        args.whole)
    else:
        bench_train(args.repeats, args.whole)


if __name__ == "__main__":
    main()
