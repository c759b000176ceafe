"""engine/trainer.py: the loop over epochs and steps (accumulation through the loader, evaluation when due, the
image cache of the data)."""
from __future__ import annotations

import copy

import pytest
import torch

from engine.trainer import RunOptions, fit
from tests.helpers import CPU, synthetic_cfg
from utils.errors import UserError


def test_accumulate_flag_divides_the_batch(tmp_path, monkeypatch):
    """fit(accumulate=2) feeds train_step two micro-batches of 2 (not one of 4) holding the same 4 images, and the
    update equals the one batch of 4 (per-sample norms: the split is exact)."""
    import engine.trainer as engine

    cfg = synthetic_cfg(tmp_path)
    seen, start = {}, {}
    real_step = engine.train_step

    def recording_step(model, optimizer, micro_batches, *args, **kwargs):
        if not seen[run]:
            start[run] = copy.deepcopy(model.state_dict())
        seen[run].append([images for images, _ in micro_batches])
        return real_step(model, optimizer, micro_batches, *args, **kwargs)

    monkeypatch.setattr(engine, "train_step", recording_step)
    for run, acc in (("big", 1), ("acc", 2)):
        seen[run] = []
        out = fit(cfg, RunOptions(tmp_path / run, device=CPU, accumulate=acc, max_iter=2, progress=False))
        assert out["iteration"] == 2
    assert [[len(m) for m in step] for step in seen["big"]] == [[4], [4]]
    assert [[len(m) for m in step] for step in seen["acc"]] == [[2, 2], [2, 2]]
    for big, acc in zip(seen["big"], seen["acc"]):  # the same images, in the same order
        assert all(torch.equal(a, b) for a, b in zip(big[0], acc[0] + acc[1]))
    a = torch.load(tmp_path / "big" / "last.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "acc" / "last.pth", weights_only=True)["model"]
    for k in a:
        assert torch.equal(start["big"][k], start["acc"][k]), k
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6, msg=k)
    assert not torch.allclose(a["decoder.cls_score.weight"], start["big"]["decoder.cls_score.weight"])  # it moved
    with pytest.raises(UserError, match="does not split over 1 process"):
        fit(cfg, RunOptions(tmp_path / "bad", device=CPU, accumulate=3, max_iter=1, progress=False))


def test_cache_images_and_the_pr_curve_of_the_last_evaluation_only(tmp_path, monkeypatch):
    """data.cache_images turns the cache on for both splits (the config refuses it with loader workers, whose
    caches would die with them); evaluating every epoch writes each evaluation's metrics, and the PR curve PNG of
    the last one only."""
    from config import ConfigError
    from data.dataset_base import DetectionDatasetBase

    cached = []
    real = DetectionDatasetBase.keep_images_in_memory
    monkeypatch.setattr(DetectionDatasetBase, "keep_images_in_memory", lambda self: (cached.append(self), real(self)))
    cfg = synthetic_cfg(tmp_path, **{"data.cache_images": True, "train.eval_period": 1})
    fit(cfg, RunOptions(tmp_path / "run", device=CPU, max_iter=7, progress=False))  # 6 steps an epoch
    assert len(cached) == 2 and all(ds._image_cache for ds in cached)  # the training and validation sets, filled
    names = sorted(p.name for p in (tmp_path / "run" / "eval").iterdir())
    assert names == ["metrics_iter6.json", "metrics_iter7.json", "metrics_iter7_pr_curve.png"]
    with pytest.raises(ConfigError, match="data.cache_images"):
        synthetic_cfg(tmp_path, **{"data.cache_images": True, "data.num_workers": 1})
