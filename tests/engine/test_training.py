"""Training behaviour: exact accumulation, DDP equivalence, exact resume, loss goes down on real data."""
from __future__ import annotations

import copy
import math
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from config import load_config
from models import build_model
from tests.conftest import COCO_SPLIT, REPO
from engine.optim import build_optimizer, effective_schedule, lr_factor
from engine.step import NonFiniteLossError, train_step
from engine.trainer import fit

# Per-sample normalisation (GroupNorm) and frozen BN in the backbone: a batch splits exactly. SGD, whose
# update is linear in the gradient (Adam's first step is ~sign(g) and amplifies float noise where g ~ 0).
TINY = {"solver.optimizer": "sgd", "model.backbone.norm": "frozen_bn", "model.backbone.width_mult": 0.25, "model.encoder.norm": "gn",
        "model.decoder.norm": "gn", "model.encoder.channels": 32, "model.encoder.mid_channels": 8}


def _tiny_cfg(**extra):
    return load_config(REPO / "config/small_cpu.yaml", {**TINY, **extra})


def _batch(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, 64 + 16 * (i % 2), 96, generator=g) * 255 for i in range(n)]
    targets = []
    for i in range(n):
        xy = torch.rand(2, 2, generator=g) * 40
        wh = 10 + torch.rand(2, 2, generator=g) * 30
        targets.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(0, 5, (2,), generator=g)})
    return images, targets


def _step(model, cfg, micro_batches, normalization):
    opt = build_optimizer(model, cfg.solver, 0.01)
    train_step(model, opt, micro_batches, device=torch.device("cpu"), normalization=normalization)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("normalization", ["batch", "per_image"])
def test_gradient_accumulation_equals_large_batch(normalization):
    cfg = _tiny_cfg(**{"model.loss.normalization": normalization})
    torch.manual_seed(0)
    model = build_model(cfg)
    images, targets = _batch(4)
    big = _step(copy.deepcopy(model), cfg, [(images, targets)], normalization)
    acc = _step(copy.deepcopy(model), cfg, [(images[:2], targets[:2]), (images[2:], targets[2:])], normalization)
    for k in big:
        torch.testing.assert_close(acc[k], big[k], rtol=1e-4, atol=1e-6, msg=k)
    # and the step really moved the weights
    assert not torch.equal(big["decoder.cls_score.weight"], model.state_dict()["decoder.cls_score.weight"])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, state, out_path, normalization):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        cfg = _tiny_cfg(**{"model.loss.normalization": normalization})
        model = build_model(cfg)
        model.load_state_dict(state)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        images, targets = _batch(4)
        mine = slice(2 * rank, 2 * rank + 2)
        opt = build_optimizer(ddp, cfg.solver, 0.01)
        train_step(ddp, opt, [(images[mine], targets[mine])], device=torch.device("cpu"), normalization=normalization)
        if rank == 0:
            torch.save(model.state_dict(), out_path)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("normalization", ["batch", "per_image"])
def test_ddp_two_processes_equal_one_process(tmp_path, normalization):
    cfg = _tiny_cfg(**{"model.loss.normalization": normalization})
    torch.manual_seed(0)
    model = build_model(cfg)
    state = copy.deepcopy(model.state_dict())
    single = _step(model, cfg, [_batch(4)], normalization)
    out = tmp_path / "ddp.pth"
    mp.spawn(_ddp_worker, args=(2, _free_port(), state, str(out), normalization), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], rtol=1e-4, atol=1e-6, msg=k)


def test_non_finite_loss_stops_loudly():
    cfg = _tiny_cfg()
    model = build_model(cfg)
    with torch.no_grad():
        model.decoder.cls_score.bias.fill_(float("nan"))
    opt = build_optimizer(model, cfg.solver, 0.01)
    with pytest.raises(NonFiniteLossError, match="non-finite loss"):
        train_step(model, opt, [_batch(2)], device=torch.device("cpu"))


def test_schedule_warmup_steps_and_linear_scaling():
    cfg = load_config(REPO / "config/yolof_r50_c5_1x.yaml")
    s = effective_schedule(cfg.solver)
    assert (s.lr, s.max_iter, s.steps, s.warmup_iters) == (0.12, 22500, (15000, 20000), 1500)
    assert lr_factor(s, 0) == pytest.approx(0.00066667, rel=1e-5)  # the official WARMUP_FACTOR: 1/1500 rounded
    assert lr_factor(s, 750) == pytest.approx(0.5 * 0.00066667 + 0.5)
    assert lr_factor(s, 1500) == 1.0 and lr_factor(s, 15000) == pytest.approx(0.1) and lr_factor(s, 20000) == pytest.approx(0.01)
    s8 = effective_schedule(load_config(REPO / "config/yolof_r50_c5_1x.yaml", {"solver.batch_size": 8}).solver)
    assert s8.lr == pytest.approx(0.015) and s8.max_iter == 180000 and s8.steps == (120000, 160000)
    s2x = effective_schedule(load_config(REPO / "config/yolof_r50_c5_1x.yaml", {"solver.schedule": "2x"}).solver)
    assert s2x.max_iter == 45000 and s2x.steps == (30000, 40000)


def test_optimizer_groups_backbone_factor_and_norm_decay():
    cfg = load_config(REPO / "config/yolof_r50_c5_1x.yaml")
    model = build_model(cfg)
    opt = build_optimizer(model, cfg.solver, 0.12)
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["backbone"]["lr"] == pytest.approx(0.12 * 0.334)
    assert by_name["head"]["lr"] == pytest.approx(0.12) and by_name["head"]["weight_decay"] == 1e-4
    assert by_name["head_norm"]["weight_decay"] == 0.0
    assert "backbone_norm" not in by_name  # FrozenBatchNorm2d has no parameters


def _synthetic_cfg(tmp_path, **extra):
    return load_config(REPO / "config/small_cpu.yaml", {
        **TINY, "data.root": str(tmp_path / "synth"), "data.synthetic.num_train": 24, "data.synthetic.num_val": 4,
        "data.synthetic.image_size": [96, 96], "data.train_min_size": [96], "data.train_max_size": 96,
        "data.test_min_size": 96, "data.test_max_size": 96, "solver.batch_size": 4, "solver.reference_batch_size": 4,
        "solver.warmup_iters": 2, "data.num_workers": 0, **extra})


def test_resume_continues_exactly(tmp_path):
    cfg = _synthetic_cfg(tmp_path)
    device = torch.device("cpu")
    full = fit(cfg, tmp_path / "full", device=device, max_iter_override=5, progress=False)
    fit(cfg, tmp_path / "part", device=device, max_iter_override=2, progress=False)  # stops mid-epoch, writes last.pth
    resumed = fit(cfg, tmp_path / "part", device=device, resume="auto", max_iter_override=5, progress=False)
    a = torch.load(tmp_path / "full" / "last.pth", weights_only=True)
    b = torch.load(tmp_path / "part" / "last.pth", weights_only=True)
    assert a["iteration"] == b["iteration"] == 5
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=0, atol=0, msg=k)
    assert resumed["loss"] == pytest.approx(full["loss"], rel=1e-5)
    # what a run writes
    for name in ("config.yaml", "command.txt", "git_commit.txt", "metrics.jsonl", "last.pth", "best.pth"):
        assert (tmp_path / "full" / name).is_file(), name
    record = json.loads((tmp_path / "full" / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("epoch", "loss_cls", "loss_box_reg", "lr", "AP", "AP50"):
        assert key in record
    assert any((tmp_path / "full" / "tensorboard").iterdir())


def test_accumulate_flag_divides_the_batch(tmp_path, monkeypatch):
    """fit(accumulate=2) feeds train_step two micro-batches of 2 (not one of 4) holding the same 4 images, and the
    update equals the one batch of 4 (per-sample norms: the split is exact)."""
    import engine.trainer as engine

    cfg = _synthetic_cfg(tmp_path)
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
        out = fit(cfg, tmp_path / run, device=torch.device("cpu"), accumulate=acc, max_iter_override=2, progress=False)
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
    with pytest.raises(ValueError, match="not divisible"):
        fit(cfg, tmp_path / "bad", device=torch.device("cpu"), accumulate=3, max_iter_override=1, progress=False)


def test_loss_goes_down_on_real_coco_images(coco_tiny):
    from data.build import build_dataset

    cfg = load_config(REPO / "config/small_cpu.yaml", {
        "model.num_classes": 80, "data.dataset": "coco", "data.root": str(coco_tiny), "data.train_split": COCO_SPLIT,
        "solver.optimizer": "sgd",
        "data.train_min_size": [256], "data.train_max_size": 384, "data.random_shift": False, "data.flip_prob": 0.0})
    ds = build_dataset(cfg, COCO_SPLIT, is_train=True)
    batch = [ds[i] for i in range(4)]
    images, targets = [b[0] for b in batch], [b[1] for b in batch]
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = build_optimizer(model, cfg.solver, 0.01)
    losses = [train_step(model, opt, [(images, targets)], device=torch.device("cpu"))["loss"] for _ in range(8)]
    assert losses[-1] < 0.8 * losses[0], losses


def test_cosine_decay_by_hand():
    """solver.lr_decay=cosine: 0.5 * (1 + cos(pi * t / max_iter)) after the linear warm-up, 0 at max_iter."""
    cfg = load_config(REPO / "config/small_cpu.yaml", {"solver.lr_decay": "cosine", "solver.max_iter": 1000,
                                                         "solver.warmup_iters": 100, "solver.warmup_factor": 0.001})
    s = effective_schedule(cfg.solver)
    assert lr_factor(s, 0) == pytest.approx(0.001)  # warm-up start (cosine 1 at t = 0)
    assert lr_factor(s, 50) == pytest.approx((0.001 * 0.5 + 0.5) * 0.5 * (1 + math.cos(math.pi * 0.05)))
    assert lr_factor(s, 500) == pytest.approx(0.5) and lr_factor(s, 1000) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(s, 250) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert all(lr_factor(s, t) >= lr_factor(s, t + 1) for t in range(100, 1000))  # decreasing after warm-up


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_fused_optimizer_makes_the_same_updates(optimizer):
    """solver.fused_optimizer: torch's fused kernel, the same update as the per-parameter loop up to rounding."""
    params = {}
    for fused in (False, True):
        cfg = load_config(REPO / "config/small_cpu.yaml", {"solver.optimizer": optimizer, "solver.fused_optimizer": fused})
        torch.manual_seed(0)
        model = build_model(cfg)
        start = copy.deepcopy(model.state_dict())
        opt = build_optimizer(model, cfg.solver, 1e-3)
        assert bool(opt.defaults["fused"]) == fused
        gen = torch.Generator().manual_seed(1)
        for _ in range(3):
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
        params[fused] = dict(model.named_parameters())
    for name, p in params[False].items():
        torch.testing.assert_close(params[True][name], p, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(params[True]["decoder.cls_score.weight"], start["decoder.cls_score.weight"])  # it moved


def test_cache_images_and_the_pr_curve_of_the_last_evaluation_only(tmp_path, monkeypatch, caplog):
    """data.cache_images turns the cache on for both splits with no loader workers (a logged skip with workers);
    evaluating every epoch writes each evaluation's metrics, and the PR curve PNG of the last one only."""
    from data.dataset_base import DetectionDatasetBase

    cached = []
    real = DetectionDatasetBase.keep_images_in_memory
    monkeypatch.setattr(DetectionDatasetBase, "keep_images_in_memory", lambda self: (cached.append(self), real(self)))
    cfg = _synthetic_cfg(tmp_path, **{"data.cache_images": True, "train.eval_period": 1})
    fit(cfg, tmp_path / "run", device=torch.device("cpu"), max_iter_override=7, progress=False)  # 6 steps an epoch
    assert len(cached) == 2 and all(ds._image_cache for ds in cached)  # the training and validation sets, filled
    names = sorted(p.name for p in (tmp_path / "run" / "eval").iterdir())
    assert names == ["metrics_iter6.json", "metrics_iter7.json", "metrics_iter7_pr_curve.png"]
    cached.clear()
    with caplog.at_level("INFO", logger="engine.trainer"):
        fit(cfg, tmp_path / "workers", device=torch.device("cpu"), max_iter_override=1, num_workers=1, progress=False)
    assert not cached and any("data.cache_images skipped" in r.getMessage() for r in caplog.records)
