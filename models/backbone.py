"""Backbones: ResNets from torchvision and CSP-DarkNet-53, returning the C5 (or DC5) feature map.

:data:`BACKBONES` names them; :func:`build_backbone` states the contract every one meets.

ResNets: the stages and blocks are torchvision's own (``BasicBlock``, ``Bottleneck``),
so torchvision's ImageNet weights load by name. Two things are YOLOF's:

* ``style="caffe"`` moves the stride-2 of each stage's first bottleneck from the
  3x3 conv to the first 1x1 conv (MSRA / Caffe2 ResNets, ``STRIDE_IN_1X1=True``),
  which is what the official YOLOF checkpoints were trained with.
* ``dilated_c5=True`` (DC5) replaces the last stage's stride by dilation 2 in
  *every* block of that stage, as detectron2/cvpods do (torchvision's
  ``replace_stride_with_dilation`` leaves the first block undilated).

``width_mult`` scales the stage widths for small CPU models; weights can only
be loaded at ``width_mult=1``. Backbones are built with random weights: the
ImageNet start is loaded by the trainer (``models/pretrained.py``), since a
trained checkpoint holds everything.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

from models.cspdarknet import CSPDarkNet53
from models.layers import FrozenBatchNorm2d

# name -> (block, layers, groups, width_per_group, torchvision weights enum)
_SPECS = {
    "resnet18": (tv_resnet.BasicBlock, (2, 2, 2, 2), 1, 64, tv_resnet.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (tv_resnet.BasicBlock, (3, 4, 6, 3), 1, 64, tv_resnet.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (tv_resnet.Bottleneck, (3, 4, 6, 3), 1, 64, tv_resnet.ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": (tv_resnet.Bottleneck, (3, 4, 23, 3), 1, 64, tv_resnet.ResNet101_Weights.IMAGENET1K_V1),
    "resnext50_32x4d": (tv_resnet.Bottleneck, (3, 4, 6, 3), 32, 4, tv_resnet.ResNeXt50_32X4D_Weights.IMAGENET1K_V1),
    "resnext101_32x8d": (tv_resnet.Bottleneck, (3, 4, 23, 3), 32, 8, tv_resnet.ResNeXt101_32X8D_Weights.IMAGENET1K_V1),
    "resnext101_64x4d": (tv_resnet.Bottleneck, (3, 4, 23, 3), 64, 4, tv_resnet.ResNeXt101_64X4D_Weights.IMAGENET1K_V1),
}


# every model.backbone.norm: name -> the ResNets' norm layer (syncbn: BatchNorm2d, converted by the trainer under DDP;
# models/cspdarknet.py maps the same names to its own)
BACKBONE_NORMS: dict[str, type[nn.Module]] = {"frozen_bn": FrozenBatchNorm2d, "bn": nn.BatchNorm2d,
                                              "syncbn": nn.BatchNorm2d}


class ResNetBackbone(nn.Module):
    """torchvision ResNet body (conv1 .. layer4) returning the last feature map.

    Args:
        name: one of ``resnet18/34/50/101``, ``resnext50_32x4d``, ``resnext101_32x8d``, ``resnext101_64x4d``.
        style: ``"pytorch"`` or ``"caffe"`` (stride on the first 1x1 conv).
        dilated_c5: DC5, output stride 16 instead of 32.
        freeze_at: 0 none, 1 stem, 2 stem + layer1, ..., 5 everything.
        norm: ``frozen_bn`` (default), ``bn`` or ``syncbn``.
        width_mult: multiplies the stage widths (1.0 = standard).

    Input (B, 3, H, W) normalised images; output (B, out_channels, H/s, W/s).
    """

    def __init__(self, name: str = "resnet50", *, style: str = "pytorch", dilated_c5: bool = False,
                 freeze_at: int = 2, norm: str = "frozen_bn", width_mult: float = 1.0):
        super().__init__()
        block, layers, groups, width_per_group, _ = _SPECS[name]
        norm_layer = BACKBONE_NORMS[norm]
        widths = [max(8, int(round(w * width_mult))) for w in (64, 128, 256, 512)]
        stem_width = widths[0]

        self.conv1 = nn.Conv2d(3, stem_width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self._inplanes = stem_width
        self._groups, self._base_width = groups, width_per_group
        self.layer1 = self._make_layer(block, widths[0], layers[0], 1, 1, norm_layer)
        self.layer2 = self._make_layer(block, widths[1], layers[1], 2, 1, norm_layer)
        self.layer3 = self._make_layer(block, widths[2], layers[2], 2, 1, norm_layer)
        self.layer4 = self._make_layer(block, widths[3], layers[3], 1 if dilated_c5 else 2,
                                       2 if dilated_c5 else 1, norm_layer)
        self.out_channels = widths[3] * block.expansion
        self.stride = 16 if dilated_c5 else 32

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if style == "caffe":
            self._move_stride_to_1x1()
        self.freeze(freeze_at)

    def _make_layer(self, block, planes, blocks, stride, dilation, norm_layer) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                norm_layer(planes * block.expansion),
            )
        kwargs = dict(groups=self._groups, base_width=self._base_width, dilation=dilation, norm_layer=norm_layer)
        if block is tv_resnet.BasicBlock:
            if dilation > 1:
                raise ValueError("dilated C5 needs a bottleneck ResNet (resnet50 and deeper)")
            kwargs = dict(norm_layer=norm_layer)
        layers = [block(self._inplanes, planes, stride, downsample, **kwargs)]
        self._inplanes = planes * block.expansion
        layers += [block(self._inplanes, planes, **kwargs) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _move_stride_to_1x1(self) -> None:
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            first = layer[0]
            if isinstance(first, tv_resnet.Bottleneck) and first.conv2.stride != (1, 1):
                first.conv1.stride, first.conv2.stride = first.conv2.stride, (1, 1)

    def freeze(self, freeze_at: int) -> None:
        """Stop gradients in the stem (1) and the first ``freeze_at - 1`` stages."""
        stages = [nn.ModuleList([self.conv1, self.bn1]), self.layer1, self.layer2, self.layer3, self.layer4]
        for stage in stages[:freeze_at]:
            for p in stage.parameters():
                p.requires_grad_(False)
            for m in stage.modules():  # frozen stages keep BN statistics fixed even with norm=bn
                if isinstance(m, nn.modules.batchnorm._BatchNorm):  # BN and a converted SyncBatchNorm
                    m.eval()
                    m.track_running_stats = True
        self.freeze_at = freeze_at

    def train(self, mode: bool = True):
        super().train(mode)
        stages = [nn.ModuleList([self.conv1, self.bn1]), self.layer1, self.layer2, self.layer3, self.layer4]
        for stage in stages[: getattr(self, "freeze_at", 0)]:
            for m in stage.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):  # BN and a converted SyncBatchNorm
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def torchvision_weights_url(name: str) -> str:
    """Where torchvision publishes the ImageNet weights of ResNet ``name``."""
    if name not in _SPECS:
        raise ValueError(f"no torchvision ImageNet weights for backbone {name!r}")
    return _SPECS[name][4].url


def _resnet(name: str) -> Callable[..., nn.Module]:
    def build(*, style: str, dilated_c5: bool, freeze_at: int, norm: str, width_mult: float) -> nn.Module:
        return ResNetBackbone(name, style=style, dilated_c5=dilated_c5, freeze_at=freeze_at, norm=norm,
                              width_mult=width_mult)
    return build


def _cspdarknet(*, style: str, dilated_c5: bool, freeze_at: int, norm: str, width_mult: float) -> nn.Module:
    del style  # one layout only (the official CSP-DarkNet-53)
    return CSPDarkNet53(dilated_c5=dilated_c5, freeze_at=freeze_at, norm=norm, width_mult=width_mult)


# Every model.backbone.name and its builder.
BACKBONES: dict[str, Callable[..., nn.Module]] = {**{name: _resnet(name) for name in _SPECS},
                                                  "cspdarknet53": _cspdarknet}  # models/cspdarknet.py


def build_backbone(name: str, *, style: str, dilated_c5: bool, freeze_at: int, norm: str,
                   width_mult: float = 1.0) -> nn.Module:
    """A randomly initialised backbone; ImageNet weights are the trainer's start (models/pretrained.py).

    The backbone contract (what the rest of the detector relies on, for every entry of :data:`BACKBONES`):

    * an ``nn.Module`` mapping (B, 3, H, W) normalised images to one feature map
      (B, ``out_channels``, ceil(H / ``stride``), ceil(W / ``stride``));
    * ``out_channels`` (int): the encoder's input width;
    * ``stride`` (int): 32, or 16 with ``dilated_c5`` (DC5); the anchor generator,
      the box coder's ``stride`` decoding and the grid matchers read it;
    * ``freeze_at`` (int, kept as an attribute): the stem and the first stages
      get ``requires_grad=False`` at construction, counted as the family's official
      code does (ResNet: 1 = stem, k = stem + res2..res{k}; CSP-DarkNet: k >= 1 =
      stem + layer1..layer{k}); ResNets also keep the BatchNorms of frozen stages in
      eval mode, CSP-DarkNet (as official) does not;
    * ``norm``: ``frozen_bn``, ``bn`` or ``syncbn`` (BatchNorm until the trainer
      converts it to SyncBatchNorm under DDP);
    * ``width_mult`` scales the widths (1.0 = the standard network, the only one
      ImageNet weights load into); ``style`` (``pytorch`` / ``caffe``) is ResNet's only;
    * parameter names match what :mod:`models.pretrained` and ``tools/convert_official.py``
      load (torchvision's names for ResNets, the official ones for CSP-DarkNet).
    """
    return BACKBONES[name](style=style, dilated_c5=dilated_c5, freeze_at=freeze_at, norm=norm, width_mult=width_mult)
