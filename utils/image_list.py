"""Padding a list of differently sized images into one batch tensor.

Shared by the data pipeline (collate, visualisation) and the model, so that the
two agree on the padding convention: images are padded at the bottom and right,
only up to the largest image of the batch (rounded up to ``size_divisibility``
when it is > 0), as the official YOLOF code does (``ImageList.from_tensors``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch


def padded_size(image_sizes: Sequence[tuple[int, int]], size_divisibility: int = 0) -> tuple[int, int]:
    """(H, W) of the batch that images of ``image_sizes`` (h, w) are padded into: the largest side of each,
    rounded up to ``size_divisibility`` when it is > 1."""
    max_h = max(h for h, _ in image_sizes)
    max_w = max(w for _, w in image_sizes)
    if size_divisibility > 1:
        max_h = int(math.ceil(max_h / size_divisibility) * size_divisibility)
        max_w = int(math.ceil(max_w / size_divisibility) * size_divisibility)
    return max_h, max_w


def pad_images(
    images: Sequence[torch.Tensor], size_divisibility: int = 0, pad_value: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    """Pad CHW images into a (B, C, Hmax, Wmax) tensor.

    Returns:
        batch: (B, C, H, W) with ``pad_value`` outside each image.
        valid_mask: (B, H, W) bool, True inside each image's own (h, w) region.
        image_sizes: list of (h, w) of every image before padding.
    """
    if len(images) == 0:
        raise ValueError("pad_images: got an empty list of images")
    image_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    max_h, max_w = padded_size(image_sizes, size_divisibility)
    c = images[0].shape[0]
    batch = images[0].new_full((len(images), c, max_h, max_w), pad_value)
    valid_mask = torch.zeros((len(images), max_h, max_w), dtype=torch.bool, device=images[0].device)
    for i, (im, (h, w)) in enumerate(zip(images, image_sizes)):
        batch[i, :, :h, :w].copy_(im)
        valid_mask[i, :h, :w] = True
    return batch, valid_mask, image_sizes
