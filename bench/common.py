"""Timing helpers for the benchmarks (median of repeated runs after warm-up): deploy/timing.py, shared with
tools/benchmark.py, made importable from bench/."""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deploy.timing import interleaved_medians, median_time, resnet50_body, sync  # noqa: E402,F401
