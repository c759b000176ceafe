"""tools/complexity.py: parameters and MACs of R50-C5 at 800x1216 against an independent count."""
from __future__ import annotations

import subprocess
import sys

import torch
from torch import nn

from config import load_config
from models import build_model
from tests.conftest import REPO
from tools.complexity import complexity


def hand_count_conv_macs(model: nn.Module, height: int, width: int) -> int:
    """Sum over every Conv2d of Cout * Cin/groups * kh * kw * Hout * Wout, with (Hout, Wout) read from a
    forward hook on the meta device (shapes only), through backbone -> encoder -> decoder."""
    macs = []

    def hook(conv, _inputs, out):
        kh, kw = conv.kernel_size
        macs.append(conv.out_channels * conv.in_channels // conv.groups * kh * kw * out.shape[-2] * out.shape[-1])

    model = model.to("meta").eval()
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model.decoder(model.encoder(model.backbone(torch.empty(1, 3, height, width, device="meta"))))
    for h in handles:
        h.remove()
    return sum(macs)


def test_r50_c5_parameters_and_macs_at_800x1216():
    cfg = load_config(REPO / "config/yolof_r50_c5_1x.yaml")
    result = complexity(build_model(cfg), 800, 1216)
    assert result["params"] == 44_113_001  # the official R50-C5 (tests/fixtures/golden/official_zoo.json)
    assert 0 < result["trainable"] < result["params"]  # stem and res2 frozen
    hand = hand_count_conv_macs(build_model(cfg), 800, 1216)
    assert abs(result["macs"] - hand) / hand < 0.02, (result["macs"], hand)
    assert result["flops"] == 2 * result["macs"]
    assert set(result["parts"]) == {"backbone", "encoder", "decoder"}
    assert result["parts"]["backbone"]["macs"] > result["parts"]["decoder"]["macs"] > result["parts"]["encoder"]["macs"]
    # activations: the stem output alone is 64 x 400 x 608 floats
    assert result["largest_activation_bytes"] >= 64 * 400 * 608 * 4 and result["activation_bytes"] > 2**30


def test_complexity_command_line_prints_the_report():
    for argv in (["tools/complexity.py"], ["-m", "tools.complexity"]):
        proc = subprocess.run([sys.executable, *argv, "--config", "config/small_cpu.yaml", "--size", "128", "128"],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "parameters:" in proc.stdout and "GMACs" in proc.stdout and "backbone" in proc.stdout
