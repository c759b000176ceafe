"""Batch collation and DataLoader worker seeding for the detection datasets."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from models.image_list import pad_images

__all__ = ["collate", "collate_padded", "worker_init_fn"]


def collate(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """``[(image, target), ...] -> ([image, ...], [target, ...])`` without padding.

    Images keep their own sizes; the model pads them (``models.image_list.pad_images``).
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


def _datasets_with_rng(dataset: Any, depth: int = 0):
    """Yield the dataset(s) owning an augmentation rng, looking through Subset/ConcatDataset wrappers."""
    if dataset is None or depth > 8:
        return
    if hasattr(dataset, "reseed"):
        yield dataset
    inner = getattr(dataset, "dataset", None)
    if inner is not None and inner is not dataset:
        yield from _datasets_with_rng(inner, depth + 1)
    for d in getattr(dataset, "datasets", None) or ():
        yield from _datasets_with_rng(d, depth + 1)


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: reseed every dataset rng from this worker's ``torch.initial_seed()``.

    torch gives each worker ``initial_seed = base_seed + worker_id`` (base_seed drawn
    from the main process's torch RNG for every epoch / DataLoader iterator), so the
    workers get different, reproducible augmentation streams.

    Deliberately does NOT call ``cv2.setNumThreads`` here: in a forked worker whose
    parent has already used OpenCV's pthreads pool, that call blocks forever
    (the pool's condition variable still counts the parent's idle threads, which
    do not exist in the child). Call ``cv2.setNumThreads`` in the main process
    before creating the DataLoader if you want to limit OpenCV threads.
    """
    info = torch.utils.data.get_worker_info()
    if info is None:  # called outside a worker
        return
    seed = torch.initial_seed()
    for ds in _datasets_with_rng(info.dataset):
        ds.reseed(seed)
