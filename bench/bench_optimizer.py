"""The optimizer step of a preset's model: torch's per-parameter loop, foreach and fused kernels.

    python -m bench.bench_optimizer                                   # the quickstart preset (AdamW)
    python -m bench.bench_optimizer --config config/yolof_r50_c5_1x.yaml --device cuda

One step = gradient-norm clipping (the preset's ``solver.clip_grad_norm``, when set) + ``optimizer.step()`` on
random gradients, with the preset's parameter groups (engine.optim.build_optimizer). The variants run
round-robin (deploy.timing.interleaved_medians), medians reported with the ratio to the loop.
``solver.fused_optimizer: true`` is the fused variant.
"""
from __future__ import annotations

import argparse

import torch

from config import load_config
from deploy.timing import interleaved_medians
from engine.optim import build_optimizer
from models import build_model
from utils.paths import REPO_ROOT as REPO

VARIANTS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO / "config/quickstart.yaml"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    device = torch.device(args.device)
    model = build_model(cfg).to(device)
    params = [q for q in model.parameters() if q.requires_grad]
    for q in params:
        q.grad = torch.randn_like(q)
    clip = cfg.solver.clip_grad_norm
    steps = {}
    for name, kwargs in VARIANTS.items():
        base = build_optimizer(model, cfg.solver, 1e-3)  # the preset's groups, rebuilt with this variant's kernel
        groups = [{k: v for k, v in g.items() if k not in ("foreach", "fused")} for g in base.param_groups]
        opt = type(base)(groups, **kwargs)  # every other setting comes with the groups

        def step(opt=opt):
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
        steps[name] = step
    times = interleaved_medians(steps, device, warmup=3, repeats=args.repeats)
    print(f"{cfg.solver.optimizer} step, {len(params)} tensors, {sum(q.numel() for q in params):,} parameters, "
          f"{device}, {torch.get_num_threads()} threads")
    for name, t in times.items():
        print(f"{name:8s} {1000 * t:7.2f} ms  {t / times['loop']:.2f}x the loop")


if __name__ == "__main__":
    main()
