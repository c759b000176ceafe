"""Shared test fixtures: the golden fixtures and real COCO images shipped in the repository.

* ``GOLDEN`` = ``tests/fixtures/golden/``: outputs of the official YOLOF code (see its README.md).
* ``COCO_TINY`` = ``tests/assets/``: 7 real COCO val2017 images with their original annotations, laid out as a
  COCO root (``annotations/instances_val2017.json``, ``val2017/*.jpg``; see its README.md). ``COCO_SPLIT`` is
  its one split, used for training and evaluation alike in the tests.
* ``SHARED`` = ``../shared`` beside the checkout: only for what is too big to ship. No test needs it today.

Both folders are part of the checkout, so a missing file fails the test (a broken checkout), never skips it.
A skipped test fails the run too unless its reason says it needs a GPU (CUDA) or a large download, or, outside CI,
the local SLURM cluster (``scripts/local_slurm.sh start``): see :func:`pytest_runtest_makereport`.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GOLDEN = REPO / "tests" / "fixtures" / "golden"
COCO_TINY = REPO / "tests" / "assets"
COCO_SPLIT = "val2017"
COCO_JSON = COCO_TINY / "annotations" / f"instances_{COCO_SPLIT}.json"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The only reasons a test may skip (matched in the skip message, case-insensitive).
ALLOWED_SKIP = re.compile(r"\b(GPU|CUDA|download)", re.IGNORECASE)
# Outside CI a test may also skip for want of a local service, when its reason names the command that provides it
# (Chromium, the local SLURM); .ci/run installs and starts both and exports YOLOF_CI=1, so there a skip fails.
SERVICE_SKIP = re.compile(r"Chromium is missing .*apt-get install|scripts/local_slurm\.sh start", re.IGNORECASE)


def service_skip_allowed(reason: str) -> bool:
    """A skip for a missing service (:data:`SERVICE_SKIP`), outside CI (YOLOF_CI is not 1)."""
    return os.environ.get("YOLOF_CI") != "1" and bool(SERVICE_SKIP.search(reason))


def golden_path(name: str) -> Path:
    """``tests/fixtures/golden/<name>``; fails (does not skip) when the checkout lacks it."""
    path = GOLDEN / name
    if not path.is_file():
        pytest.fail(f"golden fixture {path} is missing: it is part of the checkout (tests/fixtures/golden)",
                    pytrace=False)
    return path


def load_golden(name: str) -> dict:
    """The arrays of ``tests/fixtures/golden/<name>.npz`` as a dict of numpy arrays."""
    with np.load(golden_path(f"{name}.npz")) as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """A test that sets torch's thread count (for an exact comparison) leaves it as it found it: the next tests
    run at the suite's OMP_NUM_THREADS, not at one thread."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def coco_tiny() -> Path:
    """The in-repo COCO root ``tests/assets`` (split ``COCO_SPLIT``)."""
    if not COCO_JSON.is_file():
        pytest.fail(f"{COCO_JSON} is missing: the test images are part of the checkout (tests/assets)", pytrace=False)
    return COCO_TINY


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Turn a skip into a failure unless it is for a GPU or a large download.

    The suite must verify the checkout on its own: the golden parity, real-data and overfit tests run
    everywhere, so a skip there means a test lost its check (a missing fixture, a dependency not installed).
    """
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or getattr(report, "wasxfail", None) is not None:
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    if not ALLOWED_SKIP.search(reason) and not service_skip_allowed(reason):
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} skipped ({reason}); only tests that need a GPU (CUDA) or a large "
                           f"download may skip, and must say so in their reason")
