"""Shared test fixtures: locations of ../shared data (skipped when absent)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GOLDEN = SHARED / "golden"
COCO_TINY = SHARED / "data" / "coco_tiny"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def load_golden(name: str) -> dict:
    path = GOLDEN / f"{name}.npz"
    if not path.is_file():
        pytest.skip(f"golden fixture {path} is absent (it lives in ../shared/golden beside the repo)")
    with np.load(path) as d:
        return {k: d[k] for k in d.files}


@pytest.fixture
def coco_tiny() -> Path:
    if not (COCO_TINY / "annotations" / "instances_val2017.json").is_file():
        pytest.skip(f"{COCO_TINY} is absent: the real-COCO tests need ../shared/data/coco_tiny beside the repo")
    return COCO_TINY
