"""Timing helpers for the benchmarks (median of repeated runs after warm-up)."""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn, device: torch.device, *, warmup: int = 2, repeats: int = 5) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def resnet50_body(frozen: bool = False):
    """torchvision ResNet-50 conv1..layer4 (no pooling / fc)."""
    import torchvision
    from torchvision.ops import FrozenBatchNorm2d

    kw = {"norm_layer": FrozenBatchNorm2d} if frozen else {}
    net = torchvision.models.resnet50(weights=None, **kw)
    return torch.nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)


def interleaved_medians(fns: dict, device: torch.device, *, warmup: int = 1, repeats: int = 5) -> dict:
    """Median time of each function, run round-robin so that load changes hit all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            sync(device)
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}
