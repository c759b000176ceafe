"""utils/precision.py: which autocast mode runs where."""
from __future__ import annotations

import pytest
import torch

from utils.precision import amp_context, resolve_amp

CPU = torch.device("cpu")


def test_amp_auto_and_unknown_modes(caplog):
    ok, _ = __import__("utils.precision", fromlist=["cpu_bf16_support"]).cpu_bf16_support()
    with caplog.at_level("INFO"):
        assert resolve_amp("auto", CPU) == ("bf16" if ok else "none")
    assert "solver.amp=auto" in caplog.text
    assert resolve_amp("none", CPU) == "none"  # an unknown mode: refused when the config loads (test_families.py)
    with pytest.raises(ValueError, match="must be resolved"):
        amp_context(CPU, "auto")
