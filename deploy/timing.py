"""Timing for the speed benchmarks: medians of round-robin runs, the ResNet-50 body reference, and the machine.

The reference every speed ratio divides by is the "body-best": conv1..layer4 of torchvision's ResNet-50 in fp32,
timed contiguous and channels_last on the same input size, whichever is faster here (bench/bench_inference.py,
tools/benchmark.py). A ratio of 1.25 means a detector costs its extra MACs over the body and nothing more.
"""
from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

import torch
import torchvision
from torchvision.ops import FrozenBatchNorm2d

from utils.precision import BF16_CPU_FLAGS, INT8_CPU_FLAGS, cpu_flags

SIMD_FLAGS = ("avx2", "avx512f") + INT8_CPU_FLAGS + BF16_CPU_FLAGS  # what decides the speed of each precision


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


def resnet50_body(frozen: bool = False):
    """torchvision ResNet-50 conv1..layer4 (no pooling / fc)."""

    kw = {"norm_layer": FrozenBatchNorm2d} if frozen else {}
    net = torchvision.models.resnet50(weights=None, **kw)
    return torch.nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool,
                               net.layer1, net.layer2, net.layer3, net.layer4)


def body_timers(height: int, width: int, device: torch.device = torch.device("cpu")) -> dict:
    """{"body fp32 contiguous": fn, "body fp32 channels_last": fn}: the two formats of the body-best reference
    on a 1x3xHxW input (time them with the functions they are compared with, in one :func:`interleaved_medians`)."""
    torch.manual_seed(0)
    body = resnet50_body().to(device).eval()
    body_cl = resnet50_body().to(device).eval().to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, height, width, device=device)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def contiguous():
        body(x)

    @torch.no_grad()
    def channels_last():
        body_cl(x_cl)

    return {"body fp32 contiguous": contiguous, "body fp32 channels_last": channels_last}


def machine() -> dict:
    """The CPU's model name, its SIMD flags that matter here, and the threads torch uses."""
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    flags = cpu_flags()
    return {"cpu": name, "flags": [f for f in SIMD_FLAGS if f in flags] if flags is not None else None,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}
