"""engine/nonfinite.py: a non-finite step is rolled back and the run goes on; only train.nan_retries of them in a row
stop it; under fp16 an overflow is the GradScaler's skip, not a rollback."""
from __future__ import annotations

import logging

import pytest
import torch

import engine.trainer as trainer_module
import train
from engine.trainer import RunOptions, fit
from tests.conftest import REPO
from models.detector import YOLOF
from tests.helpers import CPU, SMALL, poison_losses, records, small_cfg
from utils.script import run_script


def test_a_nan_loss_is_rolled_back_and_the_run_finishes(tmp_path, monkeypatch, caplog):
    cfg = small_cfg(tmp_path, "solver.max_iter=6", "solver.steps=[5]")
    taken = []
    real_step = trainer_module.train_step

    def recording(model, *args, **kwargs):
        taken.append({k: v.clone() for k, v in model.state_dict().items() if "running" in k})
        return real_step(model, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", recording)
    poison_losses(monkeypatch, {3})
    with caplog.at_level(logging.ERROR):
        record = fit(cfg, RunOptions(tmp_path / "run", device=CPU, progress=False))
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
    calls = poison_losses(monkeypatch, "all")
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
    cfg = small_cfg(tmp_path, "solver.amp=fp16", "solver.max_iter=5", "solver.steps=[4]", "train.ema=true",
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
    monkeypatch.setattr(torch.amp, "GradScaler",
                        lambda device: torch.amp.grad_scaler.GradScaler(device, init_scale=8.0))
    fit(cfg, RunOptions(tmp_path / "run", device=CPU, progress=False))
    state = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    assert len(calls) == 6 and state["skipped_steps"] == 1
    assert state["iteration"] == 5 and state["scheduler"]["last_epoch"] == 5 and state["ema_updates"] == 5
    assert state["scaler"]["scale"] == 4.0  # halved once by the skip
    text = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert "Infinity" not in text and "NaN" not in text  # the skipped step's grad_norm=inf is not logged
    assert records(tmp_path / "run")[-1]["skipped_steps"] == 1


def test_five_separated_nans_with_nan_retries_3_finish_and_the_total_is_recorded(tmp_path, monkeypatch, caplog):
    """train.nan_retries bounds the non-finite steps *in a row*: a good step resets the streak, so a long run with
    the odd NaN finishes; its total stays in the records."""
    cfg = small_cfg(tmp_path, "solver.max_iter=12", "solver.steps=[10]", "train.nan_retries=3")
    poison_losses(monkeypatch, {2, 4, 6, 8, 10})
    with caplog.at_level(logging.ERROR):
        record = fit(cfg, RunOptions(tmp_path / "run", device=CPU, progress=False))
    assert record["iteration"] == 12 and record["nan_rollbacks"] == 5
    assert "1 in a row of train.nan_retries=3; 5 in this run" in caplog.text
    state = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    assert state["nan_rollbacks"] == 5 and state["nan_streak"] == 0


def test_nan_retries_in_a_row_stop_the_run(tmp_path, monkeypatch):
    """Two good steps, then 3 NaNs in a row with nan_retries=2: the third stops the run."""
    from engine.nonfinite import NonFiniteRunError

    cfg = small_cfg(tmp_path, "train.nan_retries=2")
    calls = poison_losses(monkeypatch, {3, 4, 5, 6})
    with pytest.raises(NonFiniteRunError, match="3 non-finite steps in a row, train.nan_retries=2"):
        fit(cfg, RunOptions(tmp_path / "run", device=CPU, progress=False))
    assert calls[0] == 5


def test_under_fp16_an_infinite_loss_is_a_scaler_skip_and_a_nan_a_rollback(tmp_path, monkeypatch):
    """A forward overflow (an inf loss) under fp16 is the GradScaler's: the step is skipped, the scale halved, the
    BatchNorm statistics restored, nothing rolled back; a NaN is rolled back."""
    cfg = small_cfg(tmp_path, "solver.amp=fp16", "solver.max_iter=4", "solver.steps=[3]")
    monkeypatch.setattr(torch.amp, "GradScaler",
                        lambda device: torch.amp.grad_scaler.GradScaler(device, init_scale=8.0))
    real = YOLOF.compute_losses
    calls = []

    def poisoned(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        calls.append(1)
        value = {2: float("inf"), 4: float("nan")}.get(len(calls))
        if value is not None:
            out = {**out, "loss_sum": out["loss_sum"] * value, "loss_cls": out["loss_cls"] * value}
        return out

    monkeypatch.setattr(YOLOF, "compute_losses", poisoned)
    record = fit(cfg, RunOptions(tmp_path / "run", device=CPU, progress=False))
    state = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    assert record["iteration"] == 4 and len(calls) == 6
    assert state["skipped_steps"] == 1 and state["nan_rollbacks"] == 1
    assert state["scaler"]["scale"] == 4.0  # halved by the inf loss only
