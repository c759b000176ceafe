"""engine/metrics_log.py: one strict JSON record per line."""
from __future__ import annotations

import json

import pytest

from engine.metrics_log import MetricsLog


def test_metrics_records_are_strict_json(tmp_path):
    log = MetricsLog(tmp_path / "m.jsonl")
    log.append({"grad_norm": float("inf"), "loss": float("nan"), "nested": [1.0, float("-inf")], "ok": 2.5})
    line = (tmp_path / "m.jsonl").read_text()
    assert json.loads(line) == {"grad_norm": None, "loss": None, "nested": [1.0, None], "ok": 2.5}
    json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
