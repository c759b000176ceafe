"""Small building blocks shared by the backbones, the encoder and the decoder: norms, activations, SyncBN
conversion."""
from __future__ import annotations

from typing import Callable

import torch
import torchvision
from torch import nn

LEAKY_RELU_SLOPE = 0.1  # the official YOLOF get_activation("LeakyReLU")

# every model.encoder.norm / model.decoder.norm: name -> layer(channels). syncbn is built as BatchNorm2d (identical on
# one process) and becomes a real SyncBatchNorm when the trainer runs under DDP (:func:`convert_sync_batchnorm`).
NORMS: dict[str, Callable[[int], nn.Module]] = {
    "bn": nn.BatchNorm2d,
    "syncbn": nn.BatchNorm2d,
    "gn": lambda channels: nn.GroupNorm(min(32, channels), channels),  # 32 groups
    "none": lambda channels: nn.Identity(),
}
# every model.encoder.activation / model.decoder.activation: name -> layer()
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(LEAKY_RELU_SLOPE, inplace=True),  # as the official CSP-D-53 recipes
}


class FrozenBatchNorm2d(torchvision.ops.FrozenBatchNorm2d):
    """torchvision's frozen BatchNorm (fixed statistics and affine), applied in the input's dtype.

    torchvision's multiplies the input by its fp32 buffers, so under autocast its output is fp32, and every
    activation of a frozen backbone between two convolutions stays fp32 and is cast again at the next
    convolution: the memory and much of the speed of bf16 / fp16 are lost. Here the scale and shift are computed
    in fp32 as there, then cast to the input's dtype; an fp32 input gives torchvision's result bit for bit.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.to(x.dtype).reshape(1, -1, 1, 1) + shift.to(x.dtype).reshape(1, -1, 1, 1)


def norm2d(kind: str, channels: int) -> nn.Module:
    """The normalisation layer ``kind`` (a key of :data:`NORMS`) over ``channels``."""
    return NORMS[kind](channels)


def activation(kind: str) -> nn.Module:
    """The activation ``kind`` (a key of :data:`ACTIVATIONS`)."""
    return ACTIVATIONS[kind]()


def convert_sync_batchnorm(model: nn.Module, norms: dict[str, str], device_type: str) -> nn.Module:
    """Turn the BatchNorms of each part ``name`` of ``model`` whose configured norm is ``syncbn`` into
    :class:`torch.nn.SyncBatchNorm` (statistics over all processes). Call it under DDP, before the optimizer.

    ``norms`` maps a child name (``backbone``, ``encoder``, ``decoder``) to its configured norm.
    PyTorch's SyncBatchNorm runs on GPUs only, so on CPU this refuses with a clear message.
    """
    parts = [name for name, kind in norms.items() if kind == "syncbn"]
    if parts and device_type == "cpu":
        keys = ", ".join(f"model.{p}.norm=syncbn" for p in parts)
        raise ValueError(f"{keys}: SyncBatchNorm needs CUDA under DDP (PyTorch has no CPU SyncBatchNorm); "
                         f"use bn for a multi-process CPU run")
    for name in parts:
        setattr(model, name, nn.SyncBatchNorm.convert_sync_batchnorm(getattr(model, name)))
    return model
