"""CSPDarkNet-53, the backbone of the official YOLOF-CSP-D-53 models.

DarkNet-53 (YOLOv3, Redmon & Farhadi 2018) with cross-stage-partial stages
(CSPNet, Wang et al. 2020) and Mish activations, as YOLOv4 uses it, built the
way the official YOLOF code builds it (``playground/.../yolof.cspdarknet53.*/
cspdarknet.py`` of megvii-model/YOLOF). Module names are the official ones, so an
official checkpoint's ``backbone.*`` entries and the official ImageNet file
``cspdarknet53.pth`` load by name.

Layout (input (B, 3, H, W), output (B, 1024, H/s, W/s), s = 32 or 16 with DC5)::

    conv1 3x3 (3 -> 32, stride 1) + bn1 + Mish
    layer1..layer5: CrossStagePartial stages of 1, 2, 8, 8, 4 DarkBlocks,
                    widths 64, 128, 256, 512, 1024, each halving the resolution
    DC5: layer5 keeps stride 1 and dilates every 3x3 conv of the stage by 2

Every conv has no bias and is followed by a BN with ``eps=1e-4`` and
``momentum=0.03`` (the official values; PyTorch's default is 1e-5 / 0.1).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from models.layers import FrozenBatchNorm2d

BN_EPS = 1e-4
BN_MOMENTUM = 0.03
STAGE_BLOCKS = (1, 2, 8, 8, 4)  # DarkBlocks per stage of CSPDarkNet-53

NormLayer = Callable[[int], nn.Module]


def csp_norm_layer(norm: str) -> NormLayer:
    """BN with the official eps and momentum: ``bn``, ``syncbn`` (BN until the trainer converts it under DDP)
    or ``frozen_bn`` (fixed affine map)."""
    if norm in ("bn", "syncbn"):
        return lambda c: nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)
    if norm == "frozen_bn":
        return lambda c: FrozenBatchNorm2d(c, eps=BN_EPS)
    raise ValueError(f"unknown backbone norm {norm!r} for cspdarknet53")


def conv_norm_mish(in_channels: int, out_channels: int, kernel_size: int, norm_layer: NormLayer,
                   stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """conv (no bias, 'same' padding for odd kernels) -> norm -> Mish; indices 0, 1, 2 as official."""
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                  bias=False),
        norm_layer(out_channels),
        nn.Mish(),
    )


class DarkBlock(nn.Module):
    """Residual block: ``x + Mish(bn2(conv2_3x3(Mish(bn1(conv1_1x1(x))))))``, no activation after the sum.

    ``channels`` in and out, ``mid_channels`` between the two convs. ``transition``
    (optional, the official ``downsample``: a 1x1 conv-norm-Mish that maps the
    stage input to ``channels``; it does not change the resolution) runs first
    and its output is the residual identity.
    """

    def __init__(self, channels: int, mid_channels: int, norm_layer: NormLayer, dilation: int = 1,
                 transition: nn.Module | None = None):
        super().__init__()
        self.downsample = transition  # official name, kept for the state dict
        self.bn1 = norm_layer(mid_channels)
        self.bn2 = norm_layer(channels)
        self.conv1 = nn.Conv2d(channels, mid_channels, 1, bias=False)
        self.conv2 = nn.Conv2d(mid_channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.activation = nn.Mish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        out = self.activation(self.bn1(self.conv1(x)))
        out = self.activation(self.bn2(self.conv2(out)))
        return out + x


class CrossStagePartial(nn.Module):
    """One CSP stage: ``in_channels`` (B, C, H, W) -> ``out_channels`` (B, C', H/stride, W/stride).

    A 3x3 ``base_layer`` (stride, dilation) feeds two paths: ``partial_transition1``
    (one 1x1 conv) and ``stage_layers`` (the DarkBlocks) followed by
    ``partial_transition2``; ``fuse_transition`` mixes their concatenation
    ``[blocks path, shortcut path]``. Each path is ``in_channels`` wide, except in
    the first stage where both are ``out_channels`` (and its blocks' middle width
    is ``in_channels``), as official.
    """

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, norm_layer: NormLayer, *,
                 first: bool, stride: int = 2, dilation: int = 1):
        super().__init__()
        part = out_channels if first else in_channels  # width of each partial path
        self.base_layer = conv_norm_mish(in_channels, out_channels, 3, norm_layer, stride, dilation)
        self.partial_transition1 = conv_norm_mish(out_channels, part, 1, norm_layer)
        blocks = [DarkBlock(part, in_channels, norm_layer, dilation,
                            conv_norm_mish(out_channels, part, 1, norm_layer) if i == 0 else None)
                  for i in range(num_blocks)]
        self.stage_layers = nn.Sequential(*blocks)
        self.partial_transition2 = conv_norm_mish(part, part, 1, norm_layer)
        self.fuse_transition = conv_norm_mish(2 * part, out_channels, 1, norm_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.base_layer(x)
        shortcut = self.partial_transition1(x)
        blocks = self.partial_transition2(self.stage_layers(x))
        return self.fuse_transition(torch.cat([blocks, shortcut], dim=1))


class CSPDarkNet53(nn.Module):
    """CSPDarkNet-53 body returning the last feature map (the official ``res5``).

    Args:
        dilated_c5: DC5 (official ``RES5_DILATION=2``): ``layer5`` has stride 1 and
            dilation 2, output stride 16 instead of 32.
        freeze_at: 0 nothing; k >= 1 stops gradients in the stem and ``layer1..layer{k}``.
            The official models freeze the stem, layer1 and layer2 (``freeze_at=2``:
            everything at stride <= 4, like ResNet's stem + res2).
        norm: ``syncbn`` (official), ``bn`` or ``frozen_bn``.
        width_mult: multiplies every width (1.0 = standard; < 1 for small CPU models).

    As official, freezing only sets ``requires_grad=False``: the (Sync)BN layers of
    frozen stages still normalise with batch statistics and update their running
    statistics in training mode. Weights use PyTorch's default initialisation
    (the official code sets none).
    """

    def __init__(self, dilated_c5: bool = False, freeze_at: int = 2, norm: str = "syncbn", width_mult: float = 1.0):
        super().__init__()
        norm_layer = csp_norm_layer(norm)
        width = lambda c: max(8, int(round(c * width_mult)))  # noqa: E731
        stem = width(32)
        self.conv1 = nn.Conv2d(3, stem, 3, padding=1, bias=False)
        self.bn1 = norm_layer(stem)
        self.act1 = nn.Mish()
        in_channels = stem
        for i, num_blocks in enumerate(STAGE_BLOCKS):
            out_channels = width(64 * 2 ** i)
            dilated = dilated_c5 and i == len(STAGE_BLOCKS) - 1
            stage = CrossStagePartial(in_channels, out_channels, num_blocks, norm_layer, first=i == 0,
                                      stride=1 if dilated else 2, dilation=2 if dilated else 1)
            self.add_module(f"layer{i + 1}", stage)
            in_channels = out_channels
        self.out_channels = in_channels
        self.stride = 16 if dilated_c5 else 32
        self.freeze(freeze_at)

    def stages(self) -> list[nn.Module]:
        """[stem, layer1, ..., layer5]: ``freeze_at=k`` freezes the first k + 1 (k >= 1)."""
        return [nn.ModuleList([self.conv1, self.bn1]), self.layer1, self.layer2, self.layer3, self.layer4, self.layer5]

    def freeze(self, freeze_at: int) -> None:
        if not 0 <= freeze_at <= 5:
            raise ValueError(f"freeze_at must be in 0..5, got {freeze_at}")
        for stage in self.stages()[: freeze_at + 1 if freeze_at else 0]:
            for p in stage.parameters():
                p.requires_grad_(False)
        self.freeze_at = freeze_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        return self.layer5(self.layer4(self.layer3(self.layer2(self.layer1(x)))))
