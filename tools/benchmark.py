"""Speed and accuracy of a checkpoint on every backend and precision that runs here, in one table.

    python -m tools.benchmark --weight runs/quickstart/last.pth --data val                      # the config's val split
    python -m tools.benchmark --weight r50.pth --data coco:val2017 --opts data.root=datasets/coco --max_images 200
    python -m tools.benchmark --weight r50.pth --data none --size 800 1216 --backends pytorch,openvino   # speed only

One row per backend x precision (deploy/backends.py) that runs on this CPU: bf16 only where the
CPU has native bf16 (elsewhere it would be fp32 again), int8 everywhere (marked "emulated" without
VNNI / AMX int8). Columns:

* ms/image: median of --repeats calls of ``Predictor.predict`` on one image after --warmup calls,
  test transform and post-processing included; rows and the reference run round-robin in one process;
* x body: that time over the "body-best", conv1..layer4 of torchvision's ResNet-50 in fp32, contiguous or
  channels_last, whichever is faster, on the model's input size (deploy/timing.py; as bench/bench_inference.py);
* AP, AP50 (COCO metric, in %) on the first --max_images images of --data, and AP - AP(pytorch fp32); an image
  that cannot be read is left out of the ground truth, as eval.py leaves it (deploy/accuracy.py);
* export s: export to ONNX + conversion (+ int8 calibration and quantization); size MiB: the file the backend
  runs (PyTorch: the fused fp32 weights).

--data names the split: ``val`` / ``train`` (the config's val_split / train_split), any other split name of
the config's dataset, ``DATASET:SPLIT`` (``synthetic:val``, ``coco:val2017``; the root is the config's
``data.root``, or --opts data.root=...), or ``none`` (speed only, on a random image of --size).
The timed image is the split's first image (or the random one); --size H W resizes it to H x W and sets
the test resize so that the model sees H x W (for the accuracy columns too).
The table is also written as JSON (--json, default benchmark.json) with the machine, versions and settings.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch

if __package__ in (None, ""):  # python tools/<name>.py: the repository root on sys.path (tools/_bootstrap.py)
    import _bootstrap  # noqa: F401

import importlib.metadata as md

from cli import run_config
from config import config_to_dict
from config.loader import apply_overrides, config_from_dict
from data.build import DATASETS, build_dataset
from data.transforms import Compose
from deploy.accuracy import predictor_metrics
from deploy.backends import BACKENDS
from deploy.predictor import Predictor
from deploy.quantize import CALIBRATION_SIZE
from deploy.timing import body_timers, interleaved_medians, machine
from utils.errors import UserError
from utils.precision import cpu_bf16_support, cpu_int8_support
from utils.script import run_script, setup_logging

logger = logging.getLogger("benchmark")
COLUMNS = ("backend", "precision", "native", "ms_per_image", "ratio_to_body_best", "AP", "AP50", "AP_diff",
           "export_s", "size_MiB")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weight", "-w", required=True, help="checkpoint (its stored config is used unless --config)")
    p.add_argument("--config", "-c", default=None, help="YAML preset overriding the checkpoint's config")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--data", default="val", help="val | train | SPLIT | DATASET:SPLIT | none (see below)")
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="time on an H x W image (default: the split's first image; with --data none: the "
                        "config's test_min_size x test_max_size)")
    p.add_argument("--backends", default="all", help=f"all, or a comma-separated subset of {','.join(BACKENDS)}")
    p.add_argument("--precisions", default="all", help="all, or a comma-separated subset of fp32,bf16,int8")
    p.add_argument("--max_images", type=int, default=300,
                   help="images of --data scored for AP (0: none, the split's first image is only timed)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls of each row first")
    p.add_argument("--repeats", type=int, default=10, help="timed calls of each row (the median is reported)")
    p.add_argument("--calib", type=Path, default=None, help="int8: a folder of calibration images "
                                                            "(default: the config's training split)")
    p.add_argument("--calib_size", type=int, default=CALIBRATION_SIZE, help="int8: calibration images")
    p.add_argument("--json", type=Path, default=Path("benchmark.json"), help="where the table is written as JSON")
    return p.parse_args(argv)


def _names(text: str, known, what: str) -> list[str]:
    if text == "all":
        return list(known)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise UserError(f"--{what} {text!r}: choose from {', '.join(known)} (comma-separated) or all")
    return names


def combinations(backends: list[str], precisions: list[str]) -> list[tuple[str, str, bool]]:
    """(backend, precision, runs natively) for every combination that runs on this CPU, in table order."""
    bf16_ok, bf16_reason = cpu_bf16_support()
    int8_ok, _ = cpu_int8_support()
    rows = []
    for backend in backends:
        for precision in BACKENDS[backend].precisions:
            if precision not in precisions or precision == "fp16":  # fp16: CUDA only
                continue
            if precision == "bf16" and not bf16_ok:
                print(f"{backend} bf16: not run, this CPU has no native bf16 ({bf16_reason}); it would run fp32")
                continue
            rows.append((backend, precision, int8_ok if precision == "int8" else True))
    return rows


def resolve_data(cfg, data: str) -> tuple[object, Optional[str], Optional[str]]:
    """(config with the dataset of --data, dataset kind, split) -- kind and split None for ``none``."""
    if data == "none":
        return cfg, None, None
    kind, _, split = data.rpartition(":")
    kind = kind or cfg.data.dataset
    if kind not in DATASETS:
        raise UserError(f"--data {data!r}: unknown dataset {kind!r}; choose one of {', '.join(DATASETS)}")
    if kind != cfg.data.dataset:
        cfg = config_from_dict(apply_overrides(config_to_dict(cfg), [f"data.dataset={kind}"]))
    split = {"val": cfg.data.val_split, "train": cfg.data.train_split}.get(split, split)
    return cfg, kind, split


def timed_image(dataset, size, cfg) -> np.ndarray:
    """The BGR image every row is timed on: the split's first image (resized to ``size``), or a random one."""
    if dataset is not None:
        image = cv2.imread(dataset.get_file_name(0), cv2.IMREAD_COLOR)
        return image if size is None else cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    h, w = size or (cfg.data.test_min_size, cfg.data.test_max_size)
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _table(rows: list[dict], body_ms: float) -> str:
    def fmt(v, spec):  # "-" for n/a, as wide as the number would be
        return format(v, spec) if v is not None else "-".rjust(int(spec.lstrip("+").split(".")[0]))

    lines = [f"{'backend':12s} {'precision':9s} {'ms/image':>9s} {'x body':>7s} {'AP':>6s} {'AP50':>6s} "
             f"{'dAP':>6s} {'export s':>8s} {'size MiB':>8s}"]
    for r in rows:
        tag = r["precision"] + ("" if r["native"] else "*")
        lines.append(f"{r['backend']:12s} {tag:9s} {fmt(r['ms_per_image'], '9.1f')} "
                     f"{fmt(r['ratio_to_body_best'], '7.2f')} {fmt(r['AP'], '6.1f')} {fmt(r['AP50'], '6.1f')} "
                     f"{fmt(r['AP_diff'], '+6.1f')} {fmt(r['export_s'], '8.1f')} {fmt(r['size_MiB'], '8.1f')}")
    lines.append(f"body-best (ResNet-50 conv1..layer4, fp32): {body_ms:.1f} ms"
                 + ("; * = emulated, this CPU has no native instructions for it" if not all(r["native"] for r in rows)
                    else ""))
    return "\n".join(lines)


def versions() -> dict:
    out = {}
    for name in ("torch", "onnxruntime", "openvino", "nncf"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_logging()
    backends = _names(args.backends, BACKENDS, "backends")
    precisions = _names(args.precisions, ("fp32", "bf16", "int8"), "precisions")
    cfg = run_config(args, args.weight)
    if args.size:
        h, w = args.size
        cfg = config_from_dict(apply_overrides(config_to_dict(cfg), [f"data.test_min_size={min(h, w)}",
                                                                    f"data.test_max_size={max(h, w)}"]))
    cfg, kind, split = resolve_data(cfg, args.data)
    dataset = None if kind is None else build_dataset(cfg, split, is_train=False, transforms=Compose([]))
    image = timed_image(dataset, args.size, cfg)
    rows, predictors, unreadable = [], {}, 0
    for backend, precision, native in combinations(backends, precisions):
        try:
            p = Predictor(args.weight, config=cfg, backend=backend, precision=precision, calib=args.calib,
                          calib_size=args.calib_size)
        except ImportError as e:  # an optional runtime that is not installed
            print(f"{backend} {precision}: not run ({e})")
            continue
        except (ValueError, FileNotFoundError) as e:  # the Predictor's errors name the file and the problem
            raise UserError(str(e)) from None
        predictors[(backend, precision)] = p
        rows.append({"backend": backend, "precision": precision, "native": native,
                     "export_s": None if p.export_seconds is None else round(p.export_seconds, 2),
                     "size_MiB": round(p.model_bytes / 2**20, 2)})
    if not rows:
        raise UserError("no backend / precision could run here")
    first = next(iter(predictors.values()))
    h, w = first.prepare(image)[0].shape[-2:]
    fns = {**body_timers(h, w), **{k: (lambda p=p: p.predict(image)) for k, p in predictors.items()}}
    logger.info("timing %d rows + the body on a %dx%d input (%d warm-up + %d timed calls each)", len(rows), h, w,
                args.warmup, args.repeats)
    t = interleaved_medians(fns, torch.device("cpu"), warmup=args.warmup, repeats=args.repeats)
    body = min(t["body fp32 contiguous"], t["body fp32 channels_last"])
    for r, p in zip(rows, predictors.values()):
        s = t[(r["backend"], r["precision"])]
        r.update(ms_per_image=round(s * 1000, 2), ratio_to_body_best=round(s / body, 3))
        scored = dataset is not None and args.max_images > 0
        m = predictor_metrics(p, dataset, kind, max_images=args.max_images) if scored else {}
        r.update(AP=_pct(m.get("AP")), AP50=_pct(m.get("AP50")))
        unreadable = m.get("images_unreadable", unreadable)  # the same images for every row
    ref = next((r for r in rows if (r["backend"], r["precision"]) == ("pytorch", "fp32")), None)
    for r in rows:
        r["AP_diff"] = (round(r["AP"] - ref["AP"], 2) if ref is not None and r["AP"] is not None else None)
    rows = [{k: r[k] for k in COLUMNS} for r in rows]
    n_scored = 0 if dataset is None else min(args.max_images, len(dataset)) - unreadable
    report = {"machine": machine(), "versions": versions(), "weight": str(args.weight), "data": args.data,
              "split": split, "images_scored": n_scored,
              "images_unreadable": unreadable,
              "input_size": [int(h), int(w)], "warmup": args.warmup, "repeats": args.repeats,
              "body_best_ms": round(body * 1000, 2),
              "body_best_format": "contiguous" if t["body fp32 contiguous"] <= t["body fp32 channels_last"]
              else "channels_last", "rows": rows}
    mc = report["machine"]
    print(f"{mc['cpu']} ({', '.join(mc['flags'] or [])}), {mc['threads']} thread(s); input {h}x{w}; "
          f"data {args.data} ({report['images_scored']} images scored"
          + (f"; {unreadable} unreadable, left out of the ground truth" if unreadable else "") + ")")
    print(_table(rows, report["body_best_ms"]))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written to {args.json}")
    return report


def _pct(v: Optional[float]) -> Optional[float]:
    return None if v is None else round(100 * v, 2)


if __name__ == "__main__":
    run_script(main)
