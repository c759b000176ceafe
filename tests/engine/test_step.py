"""engine/step.py: one optimizer step, exact under accumulation and DDP, finite or refused, in the precision asked."""
from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.multiprocessing as mp

from config import load_config
from engine.optim import build_optimizer
from engine.step import NonFiniteGradientError, NonFiniteLossError, train_step
from models import build_model
from tests.conftest import COCO_SPLIT, REPO
from tests.helpers import CPU, batch, free_port, tiny_cfg


def _step(model, cfg, micro_batches, normalization):
    opt = build_optimizer(model, cfg.solver, 0.01)
    train_step(model, opt, micro_batches, device=CPU, normalization=normalization)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("normalization", ["batch", "per_image"])
def test_gradient_accumulation_equals_large_batch(normalization):
    cfg = tiny_cfg(**{"model.loss.normalization": normalization})
    torch.manual_seed(0)
    model = build_model(cfg)
    images, targets = batch(4)
    big = _step(copy.deepcopy(model), cfg, [(images, targets)], normalization)
    acc = _step(copy.deepcopy(model), cfg, [(images[:2], targets[:2]), (images[2:], targets[2:])], normalization)
    for k in big:
        torch.testing.assert_close(acc[k], big[k], rtol=1e-4, atol=1e-6, msg=k)
    # and the step really moved the weights
    assert not torch.equal(big["decoder.cls_score.weight"], model.state_dict()["decoder.cls_score.weight"])


def _ddp_worker(rank, world, port, state, out_path, normalization):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        cfg = tiny_cfg(**{"model.loss.normalization": normalization})
        model = build_model(cfg)
        model.load_state_dict(state)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        images, targets = batch(4)
        mine = slice(2 * rank, 2 * rank + 2)
        opt = build_optimizer(ddp, cfg.solver, 0.01)
        train_step(ddp, opt, [(images[mine], targets[mine])], device=CPU, normalization=normalization)
        if rank == 0:
            torch.save(model.state_dict(), out_path)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("normalization", ["batch", "per_image"])
def test_ddp_two_processes_equal_one_process(tmp_path, normalization):
    cfg = tiny_cfg(**{"model.loss.normalization": normalization})
    torch.manual_seed(0)
    model = build_model(cfg)
    state = copy.deepcopy(model.state_dict())
    single = _step(model, cfg, [batch(4)], normalization)
    out = tmp_path / "ddp.pth"
    mp.spawn(_ddp_worker, args=(2, free_port(), state, str(out), normalization), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], rtol=1e-4, atol=1e-6, msg=k)


def test_non_finite_loss_stops_loudly():
    cfg = tiny_cfg()
    model = build_model(cfg)
    with torch.no_grad():
        model.decoder.cls_score.bias.fill_(float("nan"))
    opt = build_optimizer(model, cfg.solver, 0.01)
    with pytest.raises(NonFiniteLossError, match="non-finite loss"):
        train_step(model, opt, [batch(2)], device=CPU)


def test_non_finite_gradients_without_a_scaler_raise_before_the_step():
    model = build_model(tiny_cfg())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.decoder.cls_score.weight.register_hook(lambda g: g * float("inf"))
    opt = build_optimizer(model, tiny_cfg().solver, 0.01)
    with pytest.raises(NonFiniteGradientError, match="non-finite gradients"):
        train_step(model, opt, [batch(2)], device=CPU)
    assert issubclass(NonFiniteGradientError, NonFiniteLossError)
    for k, v in model.state_dict().items():  # the optimizer did not step
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(v, before[k]), k


def _poisoned(model, value: float):
    """``model`` whose next forward returns its losses times ``value`` (inf or nan)."""
    real = model.compute_losses

    def once(*args, **kwargs):
        out = real(*args, **kwargs)
        model.compute_losses = real
        return {**out, "loss_sum": out["loss_sum"] * value, "loss_cls": out["loss_cls"] * value}

    model.compute_losses = once
    return model


def test_an_infinite_loss_under_a_grad_scaler_is_a_skip_with_a_lower_scale_and_a_nan_is_refused():
    """fp16's GradScaler owns overflows: an inf loss (a forward overflow) skips the step and halves the scale, as
    inf gradients do; a NaN loss is refused (rolled back by the trainer) whatever the scaler."""
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = build_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = build_optimizer(model, cfg.solver, 0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    logs = train_step(_poisoned(model, float("inf")), opt, [batch(2)], device=CPU, scaler=scaler, amp="fp16")
    assert logs["skipped"] and scaler.get_scale() == 512.0
    for k, v in model.state_dict().items():  # no update
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(v, before[k]), k
    with pytest.raises(NonFiniteLossError, match="non-finite loss"):
        train_step(_poisoned(model, float("nan")), opt, [batch(2)], device=CPU, scaler=scaler, amp="fp16")
    assert scaler.get_scale() == 512.0
    logs = train_step(model, opt, [batch(2)], device=CPU, scaler=scaler, amp="fp16")
    assert not logs["skipped"] and not torch.equal(model.state_dict()["decoder.cls_score.weight"],
                                                   before["decoder.cls_score.weight"])


# |first-step loss under autocast / fp32's - 1| of the TINY model on batch(2), with labels that do not depend on the
# predictions (a rounding would otherwise flip a positive and move the loss by percents): a few times the largest
# spread over seeds that `python -m bench.calibrate_amp --case tiny_step` measures (docs/training.md, "Mixed
# precision: the tolerances"); the lower bound 0 proves that autocast reached the step.
FIXED_LABELS = {"model.matcher.name": "iou_topk", "model.matcher.ignore_thresholds": False}
AMP_STEP_BOUND = {"bf16": 1e-2, "fp16": 2.5e-3}


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_solver_amp_changes_the_training_steps_numerics_within_its_bound(amp):
    """train_step(amp=...) must run the network under autocast: the first step's loss differs from fp32's (dropping
    autocast from the step makes it equal and fails this), by less than the calibrated bound."""
    losses, cfg = {}, tiny_cfg(**FIXED_LABELS)
    for mode in ("none", amp):
        torch.manual_seed(0)
        model = build_model(cfg)
        opt = build_optimizer(model, cfg.solver, 0.01)
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0) if mode == "fp16" else None
        losses[mode] = train_step(model, opt, [batch(2)], device=CPU, scaler=scaler, amp=mode)["loss"]
    relative = abs(losses[amp] / losses["none"] - 1)
    assert 0 < relative < AMP_STEP_BOUND[amp], (losses, relative)


def test_loss_goes_down_on_real_coco_images(coco_tiny):
    from data.build import build_dataset

    cfg = load_config(REPO / "config/small_cpu.yaml", {
        "model.num_classes": 80, "data.dataset": "coco", "data.root": str(coco_tiny), "data.train_split": COCO_SPLIT,
        "solver.optimizer": "sgd",
        "data.train_min_size": [256], "data.train_max_size": 384, "data.random_shift": False, "data.flip_prob": 0.0})
    ds = build_dataset(cfg, COCO_SPLIT, is_train=True)
    picked = [ds[i] for i in range(4)]
    images, targets = [b[0] for b in picked], [b[1] for b in picked]
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = build_optimizer(model, cfg.solver, 0.01)
    losses = [train_step(model, opt, [(images, targets)], device=CPU)["loss"] for _ in range(8)]
    assert losses[-1] < 0.8 * losses[0], losses
