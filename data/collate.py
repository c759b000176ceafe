"""Batch collation for the detection datasets (their augmentation is seeded per sample: data.build.SeededDataset)."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from utils.image_list import pad_images

__all__ = ["collate", "collate_padded"]


def collate(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """``[(image, target), ...] -> ([image, ...], [target, ...])`` without padding.

    Images keep their own sizes; the model pads them (``utils.image_list.pad_images``).
    """
    images = [b[0] for b in batch]
    targets = [b[1] for b in batch]
    return images, targets


def collate_padded(batch: Sequence[tuple[torch.Tensor, dict]], size_divisibility: int = 0,
                   pad_value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """Pad into one (B, 3, H, W) tensor (bottom/right, see ``pad_images``) for visualisation.

    Returns ``(batch_tensor, valid_mask (B, H, W) bool True inside the image, targets)``.
    """
    images, targets = collate(batch)
    tensor, valid_mask, _ = pad_images(images, size_divisibility=size_divisibility, pad_value=pad_value)
    return tensor, valid_mask, targets
