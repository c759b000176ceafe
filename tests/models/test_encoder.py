"""models/encoder.py: the dilated encoder and the paper's switches of it (off, projector only, no shortcut), with
parameters counted by hand."""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from config import load_config
from config.schema import EncoderConfig
from models import build_model
from models.build import build_encoder
from models.encoder import C5Projection, DilatedBottleneck, DilatedEncoder
from tests.conftest import REPO


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- encoder
# C5 with 16 channels, encoder width 8, bottleneck width 4, BN.
# Parameters by hand (weights + biases, BN: 2 per channel):
#   C5Projection            1x1 16->8: 16*8 + 8 = 136
#   projector               1x1 16->8: 136, BN 16; 3x3 8->8: 8*8*9 + 8 = 584, BN 16            -> 752
#   one dilated block       1x1 8->4: 36, BN 8; 3x3 4->4: 4*4*9 + 4 = 148, BN 8; 1x1 4->8: 40, BN 16  -> 256
SMALL = EncoderConfig(channels=8, mid_channels=4)


def test_encoder_switches_change_the_parameters_as_counted_by_hand():
    assert _params(build_encoder(SMALL, in_channels=16)) == 752 + 4 * 256  # official: projector + 4 blocks
    assert _params(build_encoder(dataclasses.replace(SMALL, dilations=(2, 4)), in_channels=16)) == 752 + 2 * 256
    assert _params(build_encoder(dataclasses.replace(SMALL, residual=False), in_channels=16)) == 752
    assert _params(build_encoder(dataclasses.replace(SMALL, shortcut=False), in_channels=16)) == 752 + 4 * 256
    no_encoder = build_encoder(dataclasses.replace(SMALL, enabled=False), in_channels=16)
    assert isinstance(no_encoder, C5Projection) and _params(no_encoder) == 136


def test_quickstart_model_loses_the_encoder_parameters_counted_by_hand():
    # quickstart: C5 of a quarter-width ResNet-18 = 128 channels, encoder width 128, bottleneck 32.
    # projector 128*128 + 128 + 256 + 128*128*9 + 128 + 256 = 164608;
    # a block 4128 + 64 + 9248 + 64 + 4224 + 256 = 17984;
    # no encoder: 128*128 + 128 = 16512
    def count(**overrides):
        return _params(build_model(load_config(REPO / "config/small_cpu.yaml", overrides)))

    full = count()
    assert full - count(**{"model.encoder.residual": False}) == 4 * 17984
    assert full - count(**{"model.encoder.enabled": False}) == 164608 + 4 * 17984 - 16512
    assert full == count(**{"model.encoder.shortcut": False})
    assert full - count(**{"model.encoder.dilations": [2, 4]}) == 2 * 17984


def test_projector_only_is_the_encoder_without_blocks():
    torch.manual_seed(0)
    a = build_encoder(dataclasses.replace(SMALL, residual=False), in_channels=16).eval()
    torch.manual_seed(0)
    b = DilatedEncoder(16, 8, 4, dilations=()).eval()
    x = torch.randn(2, 16, 5, 7)
    assert len(a.blocks) == 0 and torch.equal(a(x), b(x))


def test_block_without_shortcut_outputs_its_branch_alone():
    x = torch.randn(2, 8, 5, 5)
    for shortcut, expected in ((True, x), (False, torch.zeros_like(x))):
        block = DilatedBottleneck(8, 4, dilation=2, shortcut=shortcut).eval()
        torch.nn.init.zeros_(block.norm3.weight)  # the branch ends in act(0 * ... + 0) = 0
        assert torch.equal(block(x), expected)
    block = DilatedBottleneck(8, 4, dilation=2, shortcut=False).eval()
    with_shortcut = DilatedBottleneck(8, 4, dilation=2).eval()
    with_shortcut.load_state_dict(block.state_dict())
    assert torch.allclose(with_shortcut(x), x + block(x))


def test_no_encoder_is_one_1x1_conv():
    torch.manual_seed(0)
    enc = build_encoder(dataclasses.replace(SMALL, enabled=False), in_channels=16)
    x = torch.randn(2, 16, 3, 4)
    assert torch.allclose(enc(x), F.conv2d(x, enc.conv.weight, enc.conv.bias))
    assert enc(x).shape == (2, 8, 3, 4) and enc.out_channels == 8
