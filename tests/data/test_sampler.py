"""The aspect-ratio grouped training sampler (official DistributedGroupSampler semantics), deterministic and
resumable."""
from __future__ import annotations

import numpy as np
import pytest

from config import load_config
from data.build import build_dataset
from data.sampler import GroupedSampler, ResumableSampler, aspect_groups, build_train_sampler
from tests.conftest import REPO


def _sizes(n_landscape: int, n_portrait: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    land = np.stack([rng.integers(300, 480, n_landscape), rng.integers(500, 640, n_landscape)], 1)
    port = np.stack([rng.integers(500, 640, n_portrait), rng.integers(300, 500, n_portrait)], 1)
    hw = np.concatenate([land, port])
    return hw[rng.permutation(len(hw))]


def _rank_lists(groups, batch, world, epoch=0, seed=3):
    out = []
    for r in range(world):
        s = GroupedSampler(groups, batch, seed=seed, rank=r, world_size=world)
        s.set_epoch(epoch)
        out.append(list(s))
    return out


def test_aspect_groups_by_hand():
    hw = np.array([[480, 640], [640, 480], [500, 500], [-1, -1], [10, 11]])
    assert aspect_groups(hw).tolist() == [1, 0, 0, 0, 1]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_batch_is_one_aspect_group_and_every_image_appears(world):
    hw = _sizes(37, 22)
    groups = aspect_groups(hw)
    batch = 4
    lists = _rank_lists(groups, batch, world)
    for items in lists:
        assert len(items) == GroupedSampler(groups, batch, 3, 0, world).num_samples
        idx = [i for i, _ in items]
        for b in range(0, len(idx), batch):
            assert len({int(groups[i]) for i in idx[b:b + batch]}) == 1  # one group per batch
    everything = [i for items in lists for i, _ in items]
    counts = np.bincount(everything, minlength=len(hw))
    assert counts.min() >= 1  # every image at least once
    unit = batch * world
    padding = sum(-(-n // unit) * unit - n for n in (37, 22))
    assert len(everything) == len(hw) + padding  # and repeats only to pad each group
    seeds = [s for items in lists for _, s in items]
    assert len(set(seeds)) == len(seeds)  # a distinct augmentation seed per position


def test_ranks_are_disjoint_when_no_padding_is_needed():
    groups = aspect_groups(_sizes(16, 8))  # multiples of batch 4 x 2 ranks
    a, b = ([i for i, _ in items] for items in _rank_lists(groups, 4, 2))
    assert not set(a) & set(b) and sorted(a + b) == list(range(24))


def test_deterministic_per_epoch_and_different_across_epochs():
    groups = aspect_groups(_sizes(20, 12))
    assert _rank_lists(groups, 4, 2, epoch=1) == _rank_lists(groups, 4, 2, epoch=1)
    assert _rank_lists(groups, 4, 2, epoch=1) != _rank_lists(groups, 4, 2, epoch=2)


@pytest.mark.parametrize("sampler_cls", ["grouped", "plain"])
def test_resume_mid_epoch_gives_the_same_remaining_samples(sampler_cls):
    groups = aspect_groups(_sizes(21, 14))

    def make(rank):
        if sampler_cls == "grouped":
            return GroupedSampler(groups, 4, seed=5, rank=rank, world_size=2)
        return ResumableSampler(len(groups), seed=5, rank=rank, world_size=2)

    for rank in (0, 1):
        full = make(rank)
        full.set_epoch(2)
        whole = list(full)
        resumed = make(rank)
        resumed.set_epoch(2, start=8)
        assert len(resumed) == len(whole) - 8
        assert list(resumed) == whole[8:]


def test_grouped_sampler_on_real_coco_images(coco_tiny):
    cfg = load_config(REPO / "config/yolof_r50_c5_1x.yaml", {
        "data.root": str(coco_tiny), "data.train_split": "val2017", "model.backbone.weights": "none"})
    ds = build_dataset(cfg, "val2017", is_train=True)
    sampler = build_train_sampler(cfg, ds, 4, rank=0, world_size=1)
    assert isinstance(sampler, GroupedSampler)
    hw = ds.image_sizes
    groups = aspect_groups(hw)
    assert 0 < groups.sum() < len(groups)  # coco_tiny has both orientations
    idx = [i for i, _ in sampler]
    for b in range(0, len(idx), 4):
        wide = hw[idx[b:b + 4], 1] > hw[idx[b:b + 4], 0]
        assert wide.all() or not wide.any()
    plain = build_train_sampler(load_config(REPO / "config/small_cpu.yaml"), ds, 4, rank=0, world_size=1)
    assert isinstance(plain, ResumableSampler)


def _steps(make, world: int, accumulate: int, global_batch: int = 8) -> list[list]:
    """The (index, seed) samples of every optimizer step over all ranks, for one process layout."""
    b = global_batch // world // accumulate
    per_rank = [list(make(b, rank, world, accumulate)) for rank in range(world)]
    unit = b * accumulate  # what one rank consumes per step
    return [sorted(s for r in range(world) for s in per_rank[r][k * unit:(k + 1) * unit])
            for k in range(len(per_rank[0]) // unit)]


@pytest.mark.parametrize("layout", [(2, 1), (4, 1), (1, 4), (2, 2), (1, 2)])
@pytest.mark.parametrize("sampler_cls", ["grouped", "plain"])
def test_every_step_takes_the_same_images_whatever_the_process_layout(sampler_cls, layout):
    """Global batch 8 over W processes x A accumulation steps: step k takes the same images with the same
    augmentation seeds as on one process, so a run resumed on another number of GPUs continues at the same image."""
    groups = aspect_groups(_sizes(37, 27))  # 64 images: no padding at the end of the plain order

    def make(b, rank, world, accumulate):
        if sampler_cls == "grouped":
            s = GroupedSampler(groups, b, seed=3, rank=rank, world_size=world, accumulate=accumulate)
        else:
            s = ResumableSampler(len(groups), seed=3, rank=rank, world_size=world)
        s.set_epoch(1)
        return s

    one = _steps(make, 1, 1)
    assert len(one) >= 7
    assert _steps(make, *layout) == one
    if sampler_cls == "grouped":  # and every per-process batch is still one aspect group
        for k in one:
            assert len({int(groups[i]) for i, _ in k}) == 1
