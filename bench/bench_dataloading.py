"""Data-loading throughput of the YOLOF training pipeline on coco_tiny train2017.

Pipeline: cv2 decode -> ResizeShortestEdge(800, max 1333) -> RandomFlip(0.5) ->
RandomShift(32, 0.5) -> ClipAndFilterBoxes -> uint8 CHW tensor.

Reports images/second for the main process (num_workers=0) and for a single
DataLoader worker (num_workers=1, i.e. per-worker throughput; the first batch,
which includes the worker start-up, is excluded), plus a per-stage breakdown in
the main process. Usage:
    python -m bench.bench_dataloading [--data-root ../shared/data/coco_tiny] [--passes 2]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from utils.paths import REPO_ROOT

ROOT = REPO_ROOT

from data.build import SeededDataset
from data.coco import COCODetection
from data.collate import collate
from data.transforms import build_transforms


def bench_loader(ds, num_workers: int, *, passes: int, batch_size: int) -> tuple[float, int]:
    n = len(ds) * passes
    sampler = [(i, k * len(ds) + i) for k in range(passes) for i in range(len(ds))]  # (index, seed), as training
    loader = DataLoader(SeededDataset(ds), batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                        collate_fn=collate, timeout=300 if num_workers else 0)
    it = iter(loader)
    first, _ = next(it)  # warm-up (worker start-up, file cache)
    count = 0
    t0 = time.perf_counter()
    for images, _ in it:
        count += len(images)
    dt = time.perf_counter() - t0
    assert count == n - len(first)
    return count / dt, count


def stage_breakdown(ds, transforms, passes: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    totals = {"decode": 0.0, "tensor": 0.0}
    names = [type(t).__name__ for t in transforms.transforms]
    for nm in names:
        totals[nm] = 0.0
    n = 0
    for _ in range(passes):
        for i in range(len(ds)):
            t0 = time.perf_counter()
            img = cv2.imread(ds.get_file_name(i), cv2.IMREAD_COLOR)
            totals["decode"] += time.perf_counter() - t0
            tgt = ds.get_annotation(i)
            for nm, t in zip(names, transforms.transforms):
                t0 = time.perf_counter()
                img, tgt = t(img, tgt, rng)
                totals[nm] += time.perf_counter() - t0
            t0 = time.perf_counter()
            torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
            totals["tensor"] += time.perf_counter() - t0
            n += 1
    return {k: 1000.0 * v / n for k, v in totals.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared/data/coco_tiny"))
    ap.add_argument("--passes", type=int, default=2, help="passes over the 80 images per measurement")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--workers", default="0,1", help="comma-separated num_workers values to measure")
    ap.add_argument("--cv2-threads", type=int, default=None,
                    help="cv2.setNumThreads(N) in the main process before anything runs (default: OpenCV's)")
    args = ap.parse_args()

    root = Path(args.data_root)
    ann = root / "annotations/instances_train2017.json"
    if not ann.is_file():
        sys.exit(f"coco_tiny not found at {root} (expected {ann})")
    if args.cv2_threads is not None:
        cv2.setNumThreads(args.cv2_threads)
    torch.manual_seed(0)
    transforms = build_transforms(True, min_size=(800,), max_size=1333, flip_prob=0.5, shift_max=32, shift_prob=0.5)
    ds = COCODetection(root / "train2017", ann, transforms=transforms)

    print(f"dataset: {len(ds)} images, {sum(len(ds.get_annotation(i)['boxes']) for i in range(len(ds)))} boxes")
    print(f"pipeline: {transforms.transforms}")
    print(f"torch {torch.__version__}, cv2 {cv2.__version__} (cv2 threads {cv2.getNumThreads()}), "
          f"torch threads {torch.get_num_threads()}, cpus {torch.multiprocessing.cpu_count()}")

    bd = stage_breakdown(ds, transforms, 1)
    print("per-image stage times in the main process (ms): " +
          ", ".join(f"{k} {v:.2f}" for k, v in bd.items()) + f", total {sum(bd.values()):.2f}")
    for nw in [int(x) for x in args.workers.split(",")]:
        ips, count = bench_loader(ds, nw, passes=args.passes, batch_size=args.batch_size)
        label = "main process (num_workers=0)" if nw == 0 else f"num_workers={nw}"
        per_worker = f" = {ips / nw:.1f} img/s per worker" if nw else ""
        print(f"{label}: {ips:.1f} img/s over {count} images{per_worker}")


if __name__ == "__main__":
    main()
