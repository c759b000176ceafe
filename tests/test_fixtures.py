"""The checkout verifies itself: the shipped golden fixtures and COCO images are intact, and no test can skip its check.

* Every file of tests/fixtures/golden and tests/assets matches its SHA-256 in the folder's SHA256SUMS (the
  fixtures are the official code's numbers: an edited one would make a parity test compare against itself).
* The annotation file of tests/assets describes exactly the images beside it (sizes read from the JPEGs).
* The skip rule of tests/conftest.py: a skipped test fails the run unless its reason is a GPU or a download.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import cv2
import pytest

from tests.conftest import COCO_JSON, COCO_SPLIT, COCO_TINY, GOLDEN, REPO


def _sums(folder):
    lines = (folder / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split(maxsplit=1) for line in lines)}


@pytest.mark.parametrize("folder", [GOLDEN, COCO_TINY], ids=["golden", "assets"])
def test_shipped_files_match_their_checksums(folder):
    sums = _sums(folder)
    shipped = {str(p.relative_to(folder)) for p in folder.rglob("*")
               if p.is_file() and p.name not in ("README.md", "SHA256SUMS") and "__pycache__" not in p.parts}
    assert shipped == set(sums), "files added or missing; update SHA256SUMS only for a deliberate change"
    for name, digest in sums.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name


def test_golden_fixtures_are_the_ones_the_readme_lists():
    readme = (GOLDEN / "README.md").read_text()
    for name in _sums(GOLDEN):
        assert f"`{name}`" in readme or f"`{name.split('.')[0]}.npz` / `.json`" in readme, name
    assert "6189487b80601dfeda89302c22abac060f977785" in readme  # the official commit that produced them


def test_asset_annotations_describe_the_images_beside_them():
    gt = json.loads(COCO_JSON.read_text())
    files = sorted(p.name for p in (COCO_TINY / COCO_SPLIT).glob("*.jpg"))
    assert sorted(im["file_name"] for im in gt["images"]) == files and len(files) <= 8
    for im in gt["images"]:
        path = COCO_TINY / COCO_SPLIT / im["file_name"]
        h, w = cv2.imread(str(path)).shape[:2]
        assert (h, w) == (im["height"], im["width"]), path
        assert path.stat().st_size < 220_000, path  # "each under about 200 KB"
        assert im["coco_url"].endswith(im["file_name"]) and im["flickr_url"].startswith("http")
    ids = {im["id"] for im in gt["images"]}
    assert all(a["image_id"] in ids for a in gt["annotations"])
    assert len(gt["categories"]) == 80  # every category kept: label indices are COCO's 80
    licences = {lic["id"] for lic in gt["licenses"]}
    assert {im["license"] for im in gt["images"]} <= licences
    readme = (COCO_TINY / "README.md").read_text()
    for im in gt["images"]:
        assert im["file_name"] in readme and im["flickr_url"] in readme and im["coco_url"] in readme


def _run_suite_with_our_conftest(folder, name: str, source: str, *flags: str, env=None):
    """pytest on one test file ``source`` beside a copy of tests/conftest.py, in its own process."""
    shutil.copy(REPO / "tests" / "conftest.py", folder / "conftest.py")
    (folder / name).write_text(source)
    return subprocess.run([sys.executable, "-m", "pytest", str(folder), "-q", *flags, "-p", "no:cacheprovider"],
                          cwd=folder, capture_output=True, text=True, timeout=300, env=env)


def test_a_skip_fails_unless_it_is_for_a_gpu_or_a_download(tmp_path):
    """Run a small suite through a copy of tests/conftest.py: only the GPU and the download skips stay skips."""
    proc = _run_suite_with_our_conftest(tmp_path, "test_skips.py",
        "import pytest\n\n"
        "def test_fixture_absent():\n    pytest.skip('golden fixture not found')\n\n"
        "@pytest.mark.skipif(True, reason='optional package missing')\ndef test_marker():\n    pass\n\n"
        "def test_gpu():\n    pytest.skip('needs a CUDA GPU')\n\n"
        "@pytest.mark.skipif(True, reason='needs the 170 MB official checkpoint download')\n"
        "def test_download():\n    pass\n\n"
        "@pytest.mark.xfail(reason='known', strict=True)\ndef test_xfail():\n    assert False\n\n"
        "def test_passes():\n    assert True\n", "-rA")
    out = proc.stdout
    assert proc.returncode == 1, out
    # a skip in the test body fails it; a skip from a skipif marker (at setup) is an error: both fail the run
    assert "1 failed, 1 passed, 2 skipped, 1 xfailed, 1 error" in out, out
    assert "FAILED test_skips.py::test_fixture_absent" in out and "ERROR test_skips.py::test_marker" in out, out
    assert "skipped (golden fixture not found); only tests that need a GPU (CUDA) or a large download may skip" in out
    assert "SKIPPED [1] test_skips.py:11: needs a CUDA GPU" in out and "official checkpoint download" in out


@pytest.mark.parametrize("ci, outcome", [("0", "1 failed, 1 passed, 1 skipped"), ("1", "2 failed, 1 passed")])
def test_a_missing_chromium_skips_outside_ci_only(tmp_path, ci, outcome):
    """The browser tests' skip (Chromium missing, with how to install it) stays a skip unless YOLOF_CI=1 (.ci/run),
    where it fails; a skip naming Chromium without saying how to install it always fails."""
    proc = _run_suite_with_our_conftest(tmp_path, "test_browser.py",
        "import pytest\n\n"
        "def test_browser():\n    pytest.skip('Chromium is missing (install it with: apt-get install chromium "
        "chromium-driver)')\n\n"
        "def test_no_hint():\n    pytest.skip('Chromium is missing')\n\n"
        "def test_passes():\n    assert True\n", env={**os.environ, "YOLOF_CI": ci})
    assert outcome in proc.stdout, proc.stdout
