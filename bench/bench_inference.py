"""Inference speed of YOLOF-R50-C5 against the bare torchvision ResNet-50 body.

    python bench/bench_inference.py [--device cpu|cuda] [--repeats 5]

Times, in one process, a 1x3x800x1216 input: the whole detector (normalisation,
backbone, encoder, decoder, post-processing) against conv1..layer4 of
torchvision's ResNet-50 in its fastest memory format (contiguous or
channels_last, whichever is faster here). Median of several runs after warm-up.
The detector's MACs are about 1.25x the body's (~99 vs ~80 GMAC), so a ratio
near 1.25 means the head costs nothing but its convolutions. On CUDA, also fp16/bf16.
"""
from __future__ import annotations

import argparse

import torch

import contextlib

from common import REPO, interleaved_medians, resnet50_body

from config import load_config
from models import build_model
from models.fuse import fuse_for_inference


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--height", type=int, default=800)
    p.add_argument("--width", type=int, default=1216)
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.rand(1, 3, args.height, args.width, device=device) * 255
    print(f"device {device}, threads {torch.get_num_threads()}, input {tuple(x.shape)}")

    dtypes = [None] + ([torch.float16, torch.bfloat16] if device.type == "cuda" else [])
    model = build_model(load_config(REPO / "config/yolof_r50_c5_1x.yaml")).to(device).eval()
    fused = fuse_for_inference(model).to(memory_format=torch.channels_last)
    body = resnet50_body().to(device).eval()
    body_cl = resnet50_body().to(device).eval().to(memory_format=torch.channels_last)
    xb = (x - 110) / 60
    xb_cl = xb.contiguous(memory_format=torch.channels_last)
    for dtype in dtypes:
        tag = "fp32" if dtype is None else str(dtype).split(".")[-1]

        def wrap(fn):
            def run():
                with torch.no_grad(), (torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()):
                    fn()
            return run

        fns = {
            "body contiguous": wrap(lambda: body(xb)),
            "body channels_last": wrap(lambda: body_cl(xb_cl)),
            "yolof plain": wrap(lambda: model([x[0]])),
            "yolof folded BN + channels_last": wrap(lambda: fused([x[0]])),
        }
        t = interleaved_medians(fns, device, repeats=args.repeats)
        body_best = min(t["body contiguous"], t["body channels_last"])
        for k, v in t.items():
            print(f"[{tag}] {k:34s} {v * 1000:7.0f} ms   ratio to best body {v / body_best:.2f}")
        best = min(t["yolof plain"], t["yolof folded BN + channels_last"])
        print(f"[{tag}] RESULT yolof {best * 1000:.0f} ms / body {body_best * 1000:.0f} ms = {best / body_best:.2f} "
              "(target <= 1.30; post-processing included)")

if __name__ == "__main__":
    main()
