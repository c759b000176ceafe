"""Inference speed of YOLOF-R50-C5 against the bare torchvision ResNet-50 body.

    python -m bench.bench_inference [--device cpu|cuda] [--repeats 5]

Times, in one process, a 1x3x800x1216 input: the whole detector (normalisation,
backbone, encoder, decoder, post-processing) against conv1..layer4 of
torchvision's ResNet-50 in its fastest memory format (contiguous or
channels_last, whichever is faster here). Median of several runs after warm-up.
The detector's MACs are about 1.25x the body's (~99 vs ~80 GMAC), so a ratio
near 1.25 means the head costs nothing but its convolutions. On CUDA, also fp16/bf16.

    python -m bench.bench_inference --csp [--device cpu|cuda] [--repeats 5]

instead times YOLOF-CSP-D-53-DC5 (config/yolof_csp_d53_dc5_3x.yaml, random weights) on its
official 608x608 test input against the bare ResNet-50 body on the same input, and prints
the MACs of both (torch.utils.flop_counter; MACs = FLOPs / 2) and their ratios.

    python -m bench.bench_inference --deploy [--repeats 5]

times the deployment paths (deploy/): the bare ResNet-50 body in fp32 contiguous, fp32
channels_last and bf16, and YOLOF-R50-C5 through ``deploy.predictor.Predictor`` (an 800x1216
uint8 image in, detections in original pixels out: test transform and post-processing
included) in fused fp32, fused bf16 and ONNX Runtime fp32 (CPU provider), each as a ratio to
the fp32 body-best. bf16 rows run only where the hardware has native bf16 (else one line says so).
"""
from __future__ import annotations

import argparse
import contextlib

import numpy as np
import torch

from config import load_config
from deploy.predictor import Predictor
from deploy.timing import interleaved_medians, resnet50_body
from models import build_model
from models.fuse import fuse_for_inference
from utils.paths import REPO_ROOT as REPO
from utils.precision import autocast, resolve_precision


def count_macs(fn) -> int:
    """Multiply-accumulates of one call of ``fn`` (torch.utils.flop_counter counts 2 FLOPs per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode  # heavy

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() // 2


def bench_csp(device: torch.device, repeats: int, size: int = 608) -> None:
    """YOLOF-CSP-D-53-DC5 (whole detector, post-processing included) against the ResNet-50 body at size x size."""
    cfg = load_config(REPO / "config/yolof_csp_d53_dc5_3x.yaml", {"model.backbone.weights": "none"})
    model = build_model(cfg).to(device).eval()
    fused = fuse_for_inference(model).to(memory_format=torch.channels_last)
    body = resnet50_body().to(device).eval()
    body_cl = resnet50_body().to(device).eval().to(memory_format=torch.channels_last)
    x = torch.rand(1, 3, size, size, device=device) * 255
    xb = (x - 110) / 60
    xb_cl = xb.contiguous(memory_format=torch.channels_last)
    print(f"device {device}, threads {torch.get_num_threads()}, input {tuple(x.shape)}")
    macs_csp, macs_body = count_macs(lambda: model([x[0]])), count_macs(lambda: body(xb))
    macs_csp_backbone = count_macs(lambda: model.backbone(xb))
    print(f"MACs: yolof-csp-d53-dc5 {macs_csp / 1e9:.1f} G (backbone {macs_csp_backbone / 1e9:.1f} G), "
          f"resnet50 body {macs_body / 1e9:.1f} G, ratio {macs_csp / macs_body:.2f}")
    dtypes = [None] + ([torch.float16, torch.bfloat16] if device.type == "cuda" else [])
    for dtype in dtypes:
        tag = "fp32" if dtype is None else str(dtype).split(".")[-1]
        amp = (lambda: torch.autocast("cuda", dtype=dtype)) if dtype is not None else contextlib.nullcontext

        def wrap(fn):
            def run():
                with torch.no_grad(), amp():
                    fn()
            return run

        t = interleaved_medians({"body contiguous": wrap(lambda: body(xb)),
                                 "body channels_last": wrap(lambda: body_cl(xb_cl)),
                                 "csp plain": wrap(lambda: model([x[0]])),
                                 "csp folded BN + channels_last": wrap(lambda: fused([x[0]]))}, device, repeats=repeats)
        body_best = min(t["body contiguous"], t["body channels_last"])
        for k, v in t.items():
            print(f"[{tag}] {k:34s} {v * 1000:7.0f} ms   ratio to best body {v / body_best:.2f}")
        best = min(t["csp plain"], t["csp folded BN + channels_last"])
        print(f"[{tag}] RESULT yolof-csp-d53-dc5 {best * 1000:.0f} ms ({1 / best:.1f} FPS) / body "
              f"{body_best * 1000:.0f} ms = {best / body_best:.2f} (MAC ratio {macs_csp / macs_body:.2f}; "
              "official: 39 FPS on a 2080Ti)")


def bench_deploy(device: torch.device, repeats: int, *, height: int, width: int) -> None:
    """Body (fp32 contiguous / channels_last / bf16) vs YOLOF through the Predictor (fp32, bf16, ONNX Runtime)."""


    cfg = load_config(REPO / "config/yolof_r50_c5_1x.yaml", {"data.test_min_size": min(height, width),
                                                             "data.test_max_size": max(height, width)})
    bf16 = resolve_precision("bf16", device) == "bf16"
    body = resnet50_body().to(device).eval()
    body_cl = resnet50_body().to(device).eval().to(memory_format=torch.channels_last)
    xb = torch.randn(1, 3, height, width, device=device)
    xb_cl = xb.contiguous(memory_format=torch.channels_last)
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    print(f"device {device}, threads {torch.get_num_threads()}, input 1x3x{height}x{width}, native bf16: {bf16}")

    def timed(fn, precision="fp32"):
        def run():
            with torch.no_grad(), autocast(device, precision):
                fn()
        return run

    torch.manual_seed(0)
    fns = {"body fp32 contiguous": timed(lambda: body(xb)), "body fp32 channels_last": timed(lambda: body_cl(xb_cl))}
    predictors = {"yolof Predictor fp32 fused": Predictor(cfg, device=device)}
    if bf16:
        fns["body bf16 channels_last"] = timed(lambda: body_cl(xb_cl), "bf16")
        predictors["yolof Predictor bf16 fused"] = Predictor(cfg, device=device, precision="bf16")
    if device.type == "cpu":
        predictors["yolof Predictor onnxruntime fp32"] = Predictor(cfg, backend="onnxruntime")
    fns.update({k: (lambda p=p: p.predict(image)) for k, p in predictors.items()})
    t = interleaved_medians(fns, device, repeats=repeats)
    body_best = min(t["body fp32 contiguous"], t["body fp32 channels_last"])
    for k, v in t.items():
        print(f"{k:36s} {v * 1000:7.0f} ms   ratio to fp32 body-best {v / body_best:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--height", type=int, default=800)
    p.add_argument("--width", type=int, default=1216)
    p.add_argument("--csp", action="store_true", help="YOLOF-CSP-D-53-DC5 at 608x608 instead (see the docstring)")
    p.add_argument("--deploy", action="store_true",
                   help="the deployment paths: body fp32/bf16 vs YOLOF through the Predictor "
                        "(fp32, bf16, ONNX Runtime)")
    args = p.parse_args()
    device = torch.device(args.device)
    if args.csp:
        bench_csp(device, args.repeats)
        return
    if args.deploy:
        bench_deploy(device, args.repeats, height=args.height, width=args.width)
        return
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
                with torch.no_grad(), (torch.autocast("cuda", dtype=dtype) if dtype is not None
                                       else contextlib.nullcontext()):
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
