"""scripts/gpu_check.sh, the GPU acceptance check: without a CUDA device it says why in one line and exits 3; with
--device cpu it runs every part small on the CPU, so that the script a GPU day depends on cannot rot."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _gpu_check(*args, tmp_path, env=None):
    environ = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "2", **(env or {})}
    return subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), *args], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=1500)


def test_without_a_cuda_device_it_exits_3_in_one_line(tmp_path):
    p = _gpu_check(tmp_path=tmp_path, env={"CUDA_VISIBLE_DEVICES": ""})
    assert p.returncode == 3, p.stdout + p.stderr[-2000:]
    lines = [line for line in (p.stdout + p.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no CUDA device: nothing was checked ("), lines
    assert "CUDA" in lines[0].split("(", 1)[1]  # why: the versions or the missing driver


def test_on_the_cpu_every_part_runs_and_passes_and_the_table_is_written_as_it_goes(tmp_path):
    out = tmp_path / "report"
    p = _gpu_check("--device", "cpu", "--out", str(out), tmp_path=tmp_path)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    report = json.loads((out / "gpu_check.json").read_text())
    rows = report["rows"]
    assert {r["part"] for r in rows} == {"environment", "parity", "mfu", "trainer", "collectives", "elastic",
                                         "inference"}
    assert all(r["status"] in ("ok", "info") for r in rows), [r for r in rows if r["status"] not in ("ok", "info")]
    checks = [r for r in rows if r["status"] == "ok"]
    assert all(r["criterion"] for r in checks)
    parity = [r["check"] for r in checks if r["part"] == "parity"]
    assert parity == ["first-step loss fp16 vs fp32", "first-step loss bf16 vs fp32"]  # never fp32 against itself
    printed = [line for line in p.stdout.splitlines() if line.startswith("| ") and not line.startswith("| part")]
    assert len(printed) == len(rows)  # each row printed, in order, as it was measured
    assert (out / "gpu_check.md").read_text().count("\n| ") == len(rows) + 1
