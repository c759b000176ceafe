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
    ``start`` to skip the samples this rank already consumed in the epoch. Rank ``r``
    takes every ``world_size``-th image of the shuffled order, so the images of
    optimizer step ``k`` are the ``k``-th ``solver.batch_size`` of that order whatever the
    number of processes and accumulation steps (up to the padding of the epoch's end).
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

    Per epoch: each group is shuffled and padded (by repeating itself) to a multiple of the global batch
    ``batch_size * world_size * accumulate`` (what one optimizer step consumes over all processes); the groups
    are concatenated, cut into global batches and those shuffled. Global batch ``k`` is step ``k``: micro-batch
    ``m`` of it is its ``m``-th ``batch_size * world_size`` images, of which rank ``r`` takes the ``r``-th
    ``batch_size``. So every batch is one group, every image appears once per epoch up to that padding, the
    ranks' shares are disjoint, and the images of step ``k`` (and their augmentation seeds, which follow the
    global position) do not depend on how the global batch is split over processes and accumulation steps: a
    run resumed on another number of processes continues at the same image. (The official sampler gives each
    rank a contiguous share of the shuffled per-process batches instead; the batches are drawn alike.)

    Args:
        groups: (N,) group id of each image (:func:`aspect_groups`).
        batch_size: images per batch of one process (the loader's batch size).
        accumulate: micro-batches per optimizer step.
    """

    def __init__(self, groups: np.ndarray, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 accumulate: int = 1):
        self.groups = np.asarray(groups, dtype=np.int64)
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.accumulate = accumulate
        self.epoch = 0
        self.start = 0
        unit = self.global_batch
        sizes = np.bincount(self.groups) if len(self.groups) else np.zeros(0, np.int64)
        self.num_samples = int(sum(-(-int(s) // unit) * unit for s in sizes if s > 0)) // world_size

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size * self.accumulate

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)

    def epoch_order(self) -> torch.Tensor:
        """(num_samples * world_size,) image indices of the whole epoch, global batch after global batch."""
        g = torch.Generator().manual_seed(_epoch_key(self.seed, self.epoch))
        unit = self.global_batch
        parts = []
        for group in range(int(self.groups.max()) + 1 if len(self.groups) else 0):
            members = torch.from_numpy(np.flatnonzero(self.groups == group))
            if len(members) == 0:
                continue
            members = members[torch.randperm(len(members), generator=g)]
            padded = -(-len(members) // unit) * unit
            parts.append(members.repeat(-(-padded // len(members)))[:padded])
        order = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)
        chunks = order.view(-1, unit)
        return chunks[torch.randperm(len(chunks), generator=g)].reshape(-1)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # rank r's samples: in every micro-batch of batch_size * world_size global positions, the r-th batch_size
        order = self.epoch_order()
        b, w = self.batch_size, self.world_size
        positions = torch.arange(len(order)).view(-1, w, b)[:, self.rank].reshape(-1)
        key = _epoch_key(self.seed, self.epoch) * 10_000_019
        mine = order[positions].tolist()
        positions = positions.tolist()
        for pos in range(self.start, len(mine)):
            yield mine[pos], key + positions[pos]


def image_sizes(dataset) -> np.ndarray:
    """(N, 2) (height, width) of the dataset's images from its annotations (through wrappers such as mixup)."""
    sizes = getattr(dataset, "image_sizes", None)
    if sizes is None:
        raise TypeError(f"{type(dataset).__name__} has no image_sizes: aspect-ratio grouping needs them "
                        f"(set data.aspect_ratio_grouping=false)")
    return np.asarray(sizes)


def build_train_sampler(cfg, dataset, batch_per_process: int, rank: int, world_size: int,
                        accumulate: int = 1) -> Sampler:
    """The training sampler of ``data.aspect_ratio_grouping`` (official: grouped). Both give step ``k`` the same
    images (as a set) whatever the number of processes and accumulation steps (see their docstrings)."""
    if not cfg.data.aspect_ratio_grouping:
        return ResumableSampler(len(dataset), cfg.train.seed, rank, world_size, shuffle=True)
    sizes = image_sizes(dataset)
    unknown = int((sizes.min(axis=1) <= 0).sum()) if len(sizes) else 0
    if unknown:
        logger.warning("%d training images have no size in their annotations; they are grouped as portrait", unknown)
    return GroupedSampler(aspect_groups(sizes), batch_per_process, cfg.train.seed, rank, world_size, accumulate)
