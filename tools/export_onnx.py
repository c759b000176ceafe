"""Export a YOLOF checkpoint to ONNX (dynamic batch, height, width; pixel normalisation inside) and check it.

    python -m tools.export_onnx --weight runs/r50/last.pth --out yolof.onnx                  # raw head outputs
    python -m tools.export_onnx --weight runs/r50/last.pth --out yolof_full.onnx --variant full  # + decode + NMS
    python test.py --weight yolof.onnx --backend onnxruntime --input photo.jpg                # run it

The file passes ``onnx.checker`` (full check); then ONNX Runtime (CPU provider) runs it on a
random example and the largest difference to PyTorch is printed. Variants and opset: deploy/onnx_export.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # python tools/<name>.py: the repository root on sys.path (tools/_bootstrap.py)
    import _bootstrap  # noqa: F401

from config import config_to_dict
from config.loader import config_from_checkpoint
from deploy.compare import matched
from deploy.onnx_export import OPSET, VARIANTS, FullGraph, RawHeadGraph, export_onnx
from models import build_model
from models.fuse import fuse_for_inference
from utils.checkpoint import load_checkpoint, load_model_weights
from utils.errors import UserError
from utils.script import run_script


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weight", "-w", required=True, help="checkpoint (its stored config is used unless --config)")
    p.add_argument("--config", "-c", default=None, help="YAML preset overriding the checkpoint's config")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--out", "-o", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--variant", choices=VARIANTS, default="raw", help="raw head outputs, or post-processing inside too")
    p.add_argument("--size", type=int, nargs=2, default=(320, 480), metavar=("H", "W"),
                   help="example input size used for tracing (any size runs afterwards)")
    return p.parse_args(argv)


@torch.no_grad()
def check_with_onnxruntime(path: Path, model, *, variant: str, size) -> str:
    """Run ``path`` under ONNX Runtime and PyTorch on one random image; a line saying how close they are."""
    import onnxruntime as ort  # optional


    x = torch.rand(1, 3, *size) * 255
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})
    graph = (RawHeadGraph if variant == "raw" else FullGraph)(fuse_for_inference(model))
    want = [t.numpy() for t in graph(x)]
    if variant == "full":  # detections: compared as sets (NMS may order ties differently)

        keys = ("boxes", "scores", "labels")
        hit, total = matched(dict(zip(keys, want)), dict(zip(keys, got)))
        return (f"ONNX Runtime vs PyTorch on a random {size[0]}x{size[1]} image: {hit} of {total} detections matched "
                f"(same label, IoU > 0.99, |score difference| < 1e-3); ONNX Runtime found {len(got[1])}")
    if [g.shape for g in got] != [w.shape for w in want]:
        return f"ONNX Runtime output shapes {[g.shape for g in got]} differ from PyTorch {[w.shape for w in want]}"
    diff = max(float(np.abs(g.astype(np.float64) - w).max()) for g, w in zip(got, want))
    return f"ONNX Runtime vs PyTorch on a random {size[0]}x{size[1]} image: max |difference| {diff:.2e}"


def main(argv=None) -> Path:
    args = parse_args(argv)
    try:
        ckpt = load_checkpoint(args.weight)
        cfg = config_from_checkpoint(ckpt, args.opts, config=args.config, source=str(args.weight))
        model = build_model(cfg)
        load_model_weights(model, args.weight)
    except (ValueError, FileNotFoundError) as e:  # e.g. a checkpoint without a config, named in the message
        raise UserError(str(e)) from None
    meta = {"config": config_to_dict(cfg), "class_names": ckpt.get("class_names")}
    out = export_onnx(model, args.out, variant=args.variant, example_size=tuple(args.size), metadata=meta)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {args.variant} variant, opset {OPSET}); "
          "onnx.checker passed")
    print(check_with_onnxruntime(out, model.eval(), variant=args.variant, size=tuple(args.size)))
    return out


if __name__ == "__main__":
    run_script(main)
