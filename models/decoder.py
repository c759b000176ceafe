"""YOLOF's decoder: a classification subnet and a regression subnet with an
implicit objectness branch (paper Sec. 3.3).

The final class logit of anchor ``a`` and class ``k`` is the logit of
``sigmoid(cls[a, k]) * sigmoid(obj[a])``, computed exactly as the official code
does, including its clamp of ``exp()`` at 1e8 (which only matters where a logit
exceeds ln(1e8) ~ 18.4):

    out = cls + obj - log(1 + min(e^cls, 1e8) + min(e^obj, 1e8))

The combination runs in fp32 whatever the autocast state: in fp16 the 1e8 clamp
overflows, and in bf16 the sum of two logits loses the bits that separate scores.

Without ``implicit_objectness`` (the paper's ablation of it) there is no objectness
branch: the class logits are the output as they are.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from models.layers import activation, norm2d
from utils.precision import fp32

_INF = 1e8


def _tower(channels: int, num_convs: int, norm: str, act: str) -> nn.Sequential:
    layers = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), norm2d(norm, channels), activation(act)]
    return nn.Sequential(*layers)


def combine_objectness(cls_logits: torch.Tensor, objectness: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, A*K, H, W) class logits and (B, A, H, W) objectness -> (B, A*K, H, W) float32."""
    b, _, h, w = cls_logits.shape
    with fp32(cls_logits.device):
        cls = cls_logits.float().view(b, -1, num_classes, h, w)
        obj = objectness.float().view(b, -1, 1, h, w)
        out = cls + obj - torch.log(1.0 + cls.exp().clamp(max=_INF) + obj.exp().clamp(max=_INF))
    return out.view(b, -1, h, w)


class Decoder(nn.Module):
    """(B, C, H, W) -> class logits (B, A*K, H, W) and box deltas (B, A*4, H, W).

    Channel ``a*K + k`` is class ``k`` of anchor ``a``; channel ``a*4 + j`` is delta
    ``j`` in (dx, dy, dw, dh), as in the official layout. The towers are conv-norm-``act``
    (``relu``, or ``leaky_relu`` with slope 0.1 in the official CSP-D-53 recipes).
    ``implicit_objectness=False``: no ``object_pred``; the class logits are returned as they are.
    """

    def __init__(self, in_channels: int, num_classes: int, num_anchors: int, num_cls_convs: int = 2,
                 num_reg_convs: int = 4, pred_kernel: int = 3, prior_prob: float = 0.01, norm: str = "bn",
                 act: str = "relu", implicit_objectness: bool = True):
        super().__init__()
        self.num_classes = num_classes
        self.num_anchors = num_anchors
        pad = pred_kernel // 2
        self.cls_subnet = _tower(in_channels, num_cls_convs, norm, act)
        self.bbox_subnet = _tower(in_channels, num_reg_convs, norm, act)
        self.cls_score = nn.Conv2d(in_channels, num_anchors * num_classes, pred_kernel, padding=pad)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, pred_kernel, padding=pad)
        self.object_pred = (nn.Conv2d(in_channels, num_anchors, pred_kernel, padding=pad)
                            if implicit_objectness else None)
        self.prior_prob = prior_prob
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.SyncBatchNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_score.bias, -math.log((1 - self.prior_prob) / self.prior_prob))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cls_logits = self.cls_score(self.cls_subnet(x))
        reg = self.bbox_subnet(x)
        if self.object_pred is None:
            return cls_logits, self.bbox_pred(reg)
        return combine_objectness(cls_logits, self.object_pred(reg), self.num_classes), self.bbox_pred(reg)
