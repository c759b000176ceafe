"""Training samplers: deterministic, rank-sharded, exactly resumable mid-epoch; they yield ``(index, seed)``.

* :class:`ResumableSampler`: a shuffled order, like ``DistributedSampler``.
* :class:`GroupedSampler`: batches of one aspect group (landscape with landscape,
  portrait with portrait), as the official ``DistributedGroupSampler`` builds them,
  so a batch is not padded to about 1333x1333.

Both take ``start`` in :meth:`set_epoch`: the samples this rank already consumed in
the epoch, so a resumed run sees exactly the remaining ones, with the same
augmentation seeds. The seed of a sample is a function of (run seed, epoch,
global position) only.
"""
from __future__ import annotations

import logging
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

logger = logging.getLogger(__name__)


def _epoch_key(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


class ResumableSampler(Sampler):
    """Shuffled, rank-sharded sampler with per-epoch order and a start offset, yielding (index, seed).

    Like ``DistributedSampler`` (pads to a multiple of ``world_size``), plus
    ``start`` to skip the samples this rank already consumed in the epoch.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        self.size, self.seed, self.rank, self.world_size, self.shuffle = size, seed, rank, world_size, shuffle
        self.epoch = 0
        self.start = 0
        self.num_samples = (size + world_size - 1) // world_size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(_epoch_key(self.seed, self.epoch))
        order = torch.randperm(self.size, generator=g) if self.shuffle else torch.arange(self.size)
        total = self.num_samples * self.world_size
        order = torch.cat([order, order[: total - self.size]]) if total > self.size else order
        mine = order[self.rank : total : self.world_size].tolist()
        for pos in range(self.start, len(mine)):
            # a distinct augmentation seed per (run seed, epoch, global position)
            yield mine[pos], _epoch_key(self.seed, self.epoch) * 10_000_019 + pos * self.world_size + self.rank


def aspect_groups(image_hw: np.ndarray) -> np.ndarray:
    """(N,) int64 group of each image from its (N, 2) (height, width): 1 when wider than tall, else 0.

    Unknown sizes (-1) fall in group 0.
    """
    image_hw = np.asarray(image_hw, dtype=np.int64).reshape(-1, 2)
    return (image_hw[:, 1] > image_hw[:, 0]).astype(np.int64)


class GroupedSampler(Sampler):
    """Batches of ``batch_size`` images of one aspect group, rank-sharded, as the official group sampler.

    Per epoch: each group is shuffled and padded (by repeating itself) to a multiple
    of ``batch_size * world_size``; the groups are concatenated and cut into chunks of
    ``batch_size``; the chunks are shuffled; rank ``r`` takes the ``r``-th contiguous
    share. So with a loader of the same ``batch_size`` (``drop_last``) every batch is
    one group, every image appears once per epoch up to that padding, and the ranks'
    shares are disjoint.

    Args:
        groups: (N,) group id of each image (:func:`aspect_groups`).
        batch_size: images per batch of one process (the loader's batch size).
    """

    def __init__(self, groups: np.ndarray, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.groups = np.asarray(groups, dtype=np.int64)
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.epoch = 0
        self.start = 0
        unit = batch_size * world_size
        sizes = np.bincount(self.groups) if len(self.groups) else np.zeros(0, np.int64)
        self.num_samples = int(sum(-(-int(s) // unit) * unit for s in sizes if s > 0)) // world_size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)

    def epoch_order(self) -> torch.Tensor:
        """(num_samples * world_size,) image indices of the whole epoch, all ranks."""
        g = torch.Generator().manual_seed(_epoch_key(self.seed, self.epoch))
        unit = self.batch_size * self.world_size
        parts = []
        for group in range(int(self.groups.max()) + 1 if len(self.groups) else 0):
            members = torch.from_numpy(np.flatnonzero(self.groups == group))
            if len(members) == 0:
                continue
            members = members[torch.randperm(len(members), generator=g)]
            padded = -(-len(members) // unit) * unit
            parts.append(members.repeat(-(-padded // len(members)))[:padded])
        order = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)
        chunks = order.view(-1, self.batch_size)
        return chunks[torch.randperm(len(chunks), generator=g)].reshape(-1)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        offset = self.rank * self.num_samples
        mine = self.epoch_order()[offset : offset + self.num_samples].tolist()
        key = _epoch_key(self.seed, self.epoch) * 10_000_019
        for pos in range(self.start, len(mine)):
            yield mine[pos], key + offset + pos


def image_sizes(dataset) -> np.ndarray:
    """(N, 2) (height, width) of the dataset's images from its annotations (through wrappers such as mixup)."""
    sizes = getattr(dataset, "image_sizes", None)
    if sizes is None:
        raise TypeError(f"{type(dataset).__name__} has no image_sizes: aspect-ratio grouping needs them "
                        f"(set data.aspect_ratio_grouping=false)")
    return np.asarray(sizes)


def build_train_sampler(cfg, dataset, batch_per_process: int, rank: int, world_size: int) -> Sampler:
    """The training sampler of ``data.aspect_ratio_grouping`` (official: grouped)."""
    if not cfg.data.aspect_ratio_grouping:
        return ResumableSampler(len(dataset), cfg.train.seed, rank, world_size, shuffle=True)
    sizes = image_sizes(dataset)
    unknown = int((sizes.min(axis=1) <= 0).sum()) if len(sizes) else 0
    if unknown:
        logger.warning("%d training images have no size in their annotations; they are grouped as portrait", unknown)
    return GroupedSampler(aspect_groups(sizes), batch_per_process, cfg.train.seed, rank, world_size)
