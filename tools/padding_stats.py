"""How much of each training batch is padding, and how many anchors the image mask excludes: measured.

    python -m tools.padding_stats --config config/quickstart.yaml --batches 50
    python -m tools.padding_stats --config config/quickstart.yaml --opts data.synthetic.size_range=[160,352] \
        data.root=data/synthetic_cache_varied

Draws batches exactly as training does (the config's train pipeline, sampler, batch size and seed),
pads them as the model does (bottom/right, up to the batch's largest image rounded up to
``model.size_divisibility``) and reports, per batch and averaged over the batches:

* ``pad_pixels``: the fraction of the padded batch tensor that lies outside every image;
* ``masked_anchors``: the fraction of the batch's anchors whose centre lies in padding, i.e. what
  ``model.loss.image_mask=true`` ignores (the same rule the model applies).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import torch

if __package__ in (None, ""):  # python tools/<name>.py: the repository root on sys.path (tools/_bootstrap.py)
    import _bootstrap  # noqa: F401

from cli import run_config
from data.build import build_dataset, build_train_loader
from models import build_model
from models.assigner import anchor_valid_mask
from utils.image_list import padded_size
from utils.script import run_script


@torch.no_grad()
def batch_padding(model, sizes: list[tuple[int, int]], cache: dict) -> tuple[float, float]:
    """(padding fraction of the batch's pixels, fraction of its anchors centred in padding) for images of ``sizes``."""

    h, w = padded_size(sizes, model.size_divisibility)
    if (h, w) not in cache:  # the feature map size of this padded size, from the backbone itself
        feat = model.backbone(torch.zeros(1, 3, h, w))
        cache[(h, w)] = model.anchor_generator(feat.shape[-2], feat.shape[-1])
    anchors = cache[(h, w)]
    pad = 1.0 - sum(a * b for a, b in sizes) / (len(sizes) * h * w)
    masked = 1.0 - anchor_valid_mask(anchors, sizes).float().mean().item()
    return pad, masked


def measure(cfg, batches: int) -> dict:
    """Mean / min / max of both fractions over the first ``batches`` training batches of ``cfg``."""

    dataset = build_dataset(cfg, cfg.data.train_split, is_train=True)
    torch.manual_seed(cfg.train.seed)
    in_process = replace(cfg, data=replace(cfg.data, num_workers=0))  # a few batches: no worker start-up
    loader, sampler = build_train_loader(in_process, dataset, cfg.solver.batch_size, 0, 1)
    model = build_model(cfg).eval()
    cache: dict = {}
    pads, masks = [], []
    for i, (images, _targets) in enumerate(loader):
        if i == batches:
            break
        pad, masked = batch_padding(model, [tuple(im.shape[-2:]) for im in images], cache)
        pads.append(pad)
        masks.append(masked)
    summary = lambda v: {"mean": statistics.fmean(v), "min": min(v), "max": max(v)}  # noqa: E731
    return {"batches": len(pads), "batch_size": cfg.solver.batch_size, "pad_pixels": summary(pads),
            "masked_anchors": summary(masks)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--batches", type=int, default=50, help="training batches to measure")
    args = p.parse_args(argv)
    args.weight = None
    cfg = run_config(args)
    result = measure(cfg, args.batches)
    print(json.dumps(result, indent=1))
    print(f"padding: {100 * result['pad_pixels']['mean']:.1f}% of the batch pixels, "
          f"{100 * result['masked_anchors']['mean']:.1f}% of the anchors centred in padding "
          f"(mean over {result['batches']} batches of {result['batch_size']})")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
