"""YOLOF's dilated encoder (paper Sec. 3.2, Fig. 4), and the paper's ablations of it.

A projector (1x1 conv + norm, then 3x3 conv + norm, no activation) reduces C5 to
``channels``; then residual bottlenecks (1x1 -> 3x3 dilated -> 1x1, each conv +
norm + activation) with growing dilations enlarge the receptive field so that one
feature level covers objects of all sizes. There is no activation after the
residual addition, as in the official code. The activation is ReLU, or
LeakyReLU(0.1) in the official CSP-D-53 recipes (8 blocks, dilations 1..8).

The ablations (``model.encoder``): ``residual: false`` keeps the projector alone
(no blocks), ``shortcut: false`` drops the identity of every block (the block's
output is its conv branch alone), and ``enabled: false`` replaces the whole encoder
by :class:`C5Projection`, one 1x1 conv from C5 to the decoder's width (the paper's
"no encoder" baseline on the bare C5 feature).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from models.layers import activation, norm2d


class DilatedBottleneck(nn.Module):
    """x + act(norm(conv1x1(act(norm(conv3x3_d(act(norm(conv1x1(x))))))))); without ``shortcut``, no ``x +``."""

    def __init__(self, channels: int, mid_channels: int, dilation: int, norm: str = "bn", act: str = "relu",
                 shortcut: bool = True):
        super().__init__()
        self.shortcut = shortcut
        self.conv1 = nn.Conv2d(channels, mid_channels, 1)
        self.norm1 = norm2d(norm, mid_channels)
        self.conv2 = nn.Conv2d(mid_channels, mid_channels, 3, padding=dilation, dilation=dilation)
        self.norm2 = norm2d(norm, mid_channels)
        self.conv3 = nn.Conv2d(mid_channels, channels, 1)
        self.norm3 = norm2d(norm, channels)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.norm1(self.conv1(x)))
        out = self.act(self.norm2(self.conv2(out)))
        out = self.act(self.norm3(self.conv3(out)))
        return x + out if self.shortcut else out


class DilatedEncoder(nn.Module):
    """(B, in_channels, H, W) -> (B, channels, H, W): the projector, then one block per dilation (none: the
    projector alone)."""

    def __init__(self, in_channels: int, channels: int = 512, mid_channels: int = 128,
                 dilations: Sequence[int] = (2, 4, 6, 8), norm: str = "bn", act: str = "relu", shortcut: bool = True):
        super().__init__()
        self.lateral_conv = nn.Conv2d(in_channels, channels, 1)
        self.lateral_norm = norm2d(norm, channels)
        self.fpn_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.fpn_norm = norm2d(norm, channels)
        self.blocks = nn.Sequential(*[DilatedBottleneck(channels, mid_channels, d, norm, act, shortcut)
                                      for d in dilations])
        self.out_channels = channels
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Official init: projector convs kaiming_uniform(a=1) (c2_xavier_fill), block convs N(0, 0.01).
        for conv in (self.lateral_conv, self.fpn_conv):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)
        for m in self.blocks.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.SyncBatchNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fpn_norm(self.fpn_conv(self.lateral_norm(self.lateral_conv(x))))
        return self.blocks(x)


class C5Projection(nn.Module):
    """(B, in_channels, H, W) -> (B, channels, H, W) by one 1x1 conv (with bias, no norm, no activation): the
    paper's "no encoder" baseline, which only brings C5 to the decoder's width. Initialised as the projector's
    convs (kaiming_uniform with a=1, zero bias)."""

    def __init__(self, in_channels: int, channels: int = 512):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 1)
        self.out_channels = channels
        nn.init.kaiming_uniform_(self.conv.weight, a=1)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
