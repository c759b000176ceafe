"""Runs that survive: a non-finite step rolled back, a GradScaler skip that advances nothing, a run folder that is
never overwritten, a checkpoint of 8 GPUs that resumes on a CPU, strict JSON records, and the COCO-scale hygiene
of the training loader (no pycocotools index, no OpenCV pool in workers, a top-k matcher)."""
from __future__ import annotations

import gc
import json
import logging
import types

import numpy as np
import pytest
import torch

import engine.trainer as trainer_module
import train
from config import load_config
from engine.metrics_log import MetricsLog
from engine.run_info import set_rng_state
from engine.step import NonFiniteLossError
from engine.trainer import fit
from models.detector import YOLOF
from models.matcher import _smallest_k
from tests.conftest import REPO
from tests.engine.test_mixed_precision import SMALL
from utils.script import run_script

CPU = torch.device("cpu")


def _cfg(tmp_path, *opts):
    return load_config(REPO / "config/small_cpu.yaml", [f"data.root={tmp_path / 'data'}", *SMALL, *opts])


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _poison_losses(monkeypatch, calls: set | str):
    """Make the loss of the listed forward calls (1-based; "all": every call) non-finite."""
    real, count = YOLOF.compute_losses, [0]

    def poisoned(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        count[0] += 1
        if calls == "all" or count[0] in calls:
            out = {**out, "loss_sum": out["loss_sum"] * float("nan"), "loss_cls": out["loss_cls"] * float("nan")}
        return out

    monkeypatch.setattr(YOLOF, "compute_losses", poisoned)
    return count


def test_a_nan_loss_is_rolled_back_and_the_run_finishes(tmp_path, monkeypatch, caplog):
    cfg = _cfg(tmp_path, "solver.max_iter=6", "solver.steps=[5]")
    taken = []
    real_step = trainer_module.train_step

    def recording(model, *args, **kwargs):
        taken.append({k: v.clone() for k, v in model.state_dict().items() if "running" in k})
        return real_step(model, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", recording)
    _poison_losses(monkeypatch, {3})
    with caplog.at_level(logging.ERROR):
        record = fit(cfg, tmp_path / "run", device=CPU, progress=False)
    assert record["iteration"] == 6 and record["nan_rollbacks"] == 1
    assert len(taken) == 7  # one batch more than steps: the poisoned one was skipped
    # the BatchNorm statistics the poisoned forward changed were restored: step 4 starts from step 3's
    for k in taken[2]:
        assert torch.equal(taken[3][k], taken[2][k]), k
    assert "rolled back to the state before the step" in caplog.text and "loss_cls" in caplog.text
    state = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    assert state["scheduler"]["last_epoch"] == state["iteration"] == 6 and state["nan_rollbacks"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_a_nan_at_every_step_stops_after_nan_retries_with_one_line(tmp_path, monkeypatch, capsys):
    calls = _poison_losses(monkeypatch, "all")
    argv = ["--config", str(REPO / "config/small_cpu.yaml"), "--output_dir", str(tmp_path / "run"),
            "--no_progress", "--opts", f"data.root={tmp_path / 'data'}", *SMALL, "train.nan_retries=2"]
    with pytest.raises(SystemExit) as e:
        run_script(lambda: train.main(argv))
    assert e.value.code == 2
    assert calls[0] == 3  # the first attempt and 2 retries
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "non-finite loss" in errors[0] and "train.nan_retries=2" in errors[0], errors


def test_a_forced_scaler_skip_advances_neither_schedule_nor_ema_nor_iteration(tmp_path, monkeypatch):
    """fp16 with GradScaler("cpu"): inf gradients in one step (a hook on one weight) make the scaler skip it."""
    cfg = _cfg(tmp_path, "solver.amp=fp16", "solver.max_iter=5", "solver.steps=[4]", "train.ema=true",
               "train.ema_ramp=0", "solver.clip_grad_norm=10.0")
    calls = []
    real_step = trainer_module.train_step

    def inf_grads_once(model, *args, **kwargs):
        calls.append(1)
        if len(calls) != 3:
            return real_step(model, *args, **kwargs)
        handle = model.decoder.cls_score.weight.register_hook(lambda g: g * float("inf"))
        try:
            return real_step(model, *args, **kwargs)
        finally:
            handle.remove()

    monkeypatch.setattr(trainer_module, "train_step", inf_grads_once)
    # the scaler's first scale (2**16) overflows fp16 gradients by itself; start it where this model's fit
    monkeypatch.setattr(torch.amp, "GradScaler", lambda device: torch.amp.grad_scaler.GradScaler(device, init_scale=8.0))
    fit(cfg, tmp_path / "run", device=CPU, progress=False)
    state = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    assert len(calls) == 6 and state["skipped_steps"] == 1
    assert state["iteration"] == 5 and state["scheduler"]["last_epoch"] == 5 and state["ema_updates"] == 5
    assert state["scaler"]["scale"] == 4.0  # halved once by the skip
    text = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert "Infinity" not in text and "NaN" not in text  # the skipped step's grad_norm=inf is not logged
    assert _records(tmp_path / "run")[-1]["skipped_steps"] == 1


def test_metrics_records_are_strict_json(tmp_path):
    log = MetricsLog(tmp_path / "m.jsonl")
    log.append({"grad_norm": float("inf"), "loss": float("nan"), "nested": [1.0, float("-inf")], "ok": 2.5})
    line = (tmp_path / "m.jsonl").read_text()
    assert json.loads(line) == {"grad_norm": None, "loss": None, "nested": [1.0, None], "ok": 2.5}
    json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


def test_the_same_command_twice_never_destroys_a_run(tmp_path, capsys):
    """Run 1: 6 steps. The same command with --max_iter 3 and no --resume continues run 1 (complete: nothing to
    do); another config stops in one line and touches nothing; --overwrite starts over."""
    out = tmp_path / "run"
    head = ["--config", str(REPO / "config/small_cpu.yaml"), "--output_dir", str(out), "--no_progress"]
    opts = ["--opts", f"data.root={tmp_path / 'data'}", *SMALL, "solver.max_iter=6", "solver.steps=[5]"]
    argv = head + opts
    train.main(argv)
    before = {name: (out / name).read_bytes() for name in ("last.pth", "best.pth", "metrics.jsonl")}
    train.main(head + ["--max_iter", "3"] + opts)
    assert {name: (out / name).read_bytes() for name in before} == before
    assert "holds a run of this config: continuing it" in (out / "log.txt").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_script(lambda: train.main(argv + ["solver.base_lr=0.002"]))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {out} already holds another config (keys solver.base_lr): continue it with --resume, "
                   f"choose another --output_dir, or pass --overwrite to discard it"]
    assert {name: (out / name).read_bytes() for name in before} == before
    train.main(["--overwrite"] + argv + ["solver.base_lr=0.002"])
    records = _records(out)
    assert records[-1]["iteration"] == 6 and (out / "metrics.jsonl").read_bytes() != before["metrics.jsonl"]
    assert torch.load(out / "last.pth", weights_only=True)["config"]["solver"]["base_lr"] == 0.002


def test_a_checkpoint_with_8_cuda_rng_states_resumes_on_cpu(tmp_path, caplog):
    cfg = _cfg(tmp_path, "solver.max_iter=4", "solver.steps=[3]")
    fit(cfg, tmp_path / "run", device=CPU, progress=False, max_iter_override=2)
    path = tmp_path / "run" / "last.pth"
    state = torch.load(path, weights_only=True)
    state["rng"]["cuda"] = [torch.randint(0, 255, (16,), dtype=torch.uint8) for _ in range(8)]  # 8 GPUs' states
    torch.save(state, path)
    with caplog.at_level(logging.INFO):
        record = fit(cfg, tmp_path / "run", device=CPU, progress=False, resume="auto")
    assert record["iteration"] == 4
    assert "holds 8 CUDA RNG state(s), this process sees 0 GPU(s): restored 0" in caplog.text
    set_rng_state({**state["rng"], "cuda": []})  # no CUDA states at all: fine too


def test_the_training_split_keeps_arrays_not_a_pycocotools_index(tmp_path):
    """A 5000-image COCO file: the training dataset holds no COCO object (nor the parsed JSON); the evaluation
    split does."""
    from pycocotools.coco import COCO

    from data.build import build_dataset

    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "train").mkdir()
    rng = np.random.default_rng(0)
    images = [{"id": i, "file_name": f"{i:06d}.jpg", "height": 480, "width": 640} for i in range(1, 5001)]
    anns = [{"id": k, "image_id": int(rng.integers(1, 5001)), "category_id": int(rng.integers(1, 4)),
             "bbox": [10.0, 20.0, 50.0, 40.0], "area": 2000.0, "iscrowd": 0} for k in range(1, 20001)]
    data = {"images": images, "annotations": anns, "categories": [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)]}
    (root / "annotations" / "instances_train.json").write_text(json.dumps(data))
    cfg = load_config(REPO / "config/small_cpu.yaml", {"data.dataset": "coco", "data.root": str(root),
                                                        "model.num_classes": 3})
    ds = build_dataset(cfg, "train", is_train=True)
    assert len(ds) > 4000 and ds._coco is None
    reachable = _reachable(ds)
    assert not any(type(o) is COCO for o in reachable)
    assert not any(type(o) is dict and ("annotations" in o or "bbox" in o) for o in reachable)  # nor the JSON
    assert len(reachable) < len(anns) / 2  # packed arrays, not an object per annotation


def _reachable(root, limit: int = 200_000) -> list:
    """The objects reachable from ``root`` (through gc referents; modules, classes and functions not followed)."""
    seen, todo, out = {id(root)}, [root], []
    while todo and len(out) < limit:
        obj = todo.pop()
        out.append(obj)
        for ref in gc.get_referents(obj):
            if id(ref) not in seen and not isinstance(ref, (type, types.ModuleType, types.FunctionType)):
                seen.add(id(ref))
                todo.append(ref)
    return out


def test_dataloader_workers_have_no_opencv_pool(tmp_path):
    import cv2

    from data.build import build_test_loader

    class Threads(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.tensor(cv2.getNumThreads()), {}

    before = cv2.getNumThreads()
    try:
        loader = build_test_loader(Threads(), 1, num_workers=1)
        assert [int(images[0]) for images, _ in loader] == [1, 1]  # setNumThreads(0): getNumThreads() is 1
    finally:
        cv2.setNumThreads(before)


def test_top_k_matching_equals_a_stable_sort_on_ties():
    """``_smallest_k`` (top-k of 2k candidates) gives exactly a stable sort's first k, ties included."""
    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        r, k = int(torch.randint(1, 80, (1,), generator=g)), int(torch.randint(1, 9, (1,), generator=g))
        cost = torch.randint(0, 6, (2, r, 3), generator=g).float() if trial % 2 else torch.rand(2, r, 3, generator=g)
        cost[:, r // 2] = cost[:, 0]  # a tie at every rank
        expected = torch.sort(cost, dim=1, stable=True).indices[:, :min(k, r)]
        assert torch.equal(_smallest_k(cost, k), expected), (trial, r, k)
    cost = torch.tensor([[[3.0], [1.0], [2.0], [1.0], [5.0], [1.0], [0.5]]])  # by hand: 0.5 (6), then 1.0 at 1, 3
    assert _smallest_k(cost, 3).flatten().tolist() == [6, 1, 3]


def test_non_finite_gradients_without_a_scaler_raise_before_the_step():
    from engine.optim import build_optimizer
    from engine.step import NonFiniteGradientError, train_step
    from models import build_model
    from tests.engine.test_training import _batch, _tiny_cfg

    model = build_model(_tiny_cfg())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.decoder.cls_score.weight.register_hook(lambda g: g * float("inf"))
    opt = build_optimizer(model, _tiny_cfg().solver, 0.01)
    with pytest.raises(NonFiniteGradientError, match="non-finite gradients"):
        train_step(model, opt, [_batch(2)], device=CPU)
    assert issubclass(NonFiniteGradientError, NonFiniteLossError)
    for k, v in model.state_dict().items():  # the optimizer did not step
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(v, before[k]), k
