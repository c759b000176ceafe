"""Small building blocks shared by the encoder and the decoder."""
from __future__ import annotations

from torch import nn


def norm2d(kind: str, channels: int) -> nn.Module:
    """A normalisation layer by name: ``bn``, ``syncbn``, ``gn`` (32 groups) or ``none``."""
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "syncbn":
        return nn.SyncBatchNorm(channels)
    if kind == "gn":
        return nn.GroupNorm(min(32, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")
