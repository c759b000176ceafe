"""tools/plot_runs.py: one panel per metric, one line per run, the points of metrics.jsonl (checked through
matplotlib's axes and lines, not pixels)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from config import load_config
from tests.conftest import REPO
from tools.plot_runs import main, plot_runs


def _write(run, records):
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def _it(i, spe, loss, lr):
    return {"type": "iter", "iteration": i, "epoch": (i - 1) // spe, "steps_per_epoch": spe, "lr": lr,
            "loss": loss, "loss_cls": loss / 4, "loss_box_reg": 3 * loss / 4, "time_s": 0.1 * i}


def _ep(epoch, i, loss, ap=None):
    r = {"epoch": epoch, "iteration": i, "lr": 0.01, "time_s": 1.0, "epoch_time_s": 1.0, "loss": loss,
         "loss_cls": loss / 4, "loss_box_reg": 3 * loss / 4}
    if ap is not None:
        r.update({"AP": ap, "AP50": 2 * ap, "APl": -1.0})  # -1: pycocotools' "undefined"
    return r


@pytest.fixture
def two_runs(tmp_path):
    # "long": 4 steps an epoch, 8 steps; "short": 2 steps an epoch (twice the batch), 4 steps
    long = _write(tmp_path / "long", [_it(2, 4, 4.0, 0.005), _it(4, 4, 3.0, 0.01), _ep(0, 4, 3.5, 0.1),
                                      _it(6, 4, 2.0, 0.01), _it(8, 4, 1.0, 0.001), _ep(1, 8, 1.5, 0.3)])
    short = _write(tmp_path / "short", [_it(2, 2, 3.0, 0.02), _ep(0, 2, 3.0, 0.2), _it(4, 2, 2.5, 0.002),
                                        _ep(1, 4, 2.5, 0.25)])
    return long, short


def _panels(fig) -> dict:
    return {ax.get_title(): ax for ax in fig.axes}


def test_one_panel_per_metric_one_line_per_run_at_the_logged_points(two_runs, tmp_path):
    fig = plot_runs(two_runs, tmp_path / "curves.png")
    panels = _panels(fig)
    assert list(panels) == ["loss", "loss_cls", "loss_box_reg", "lr", "AP", "AP50"]  # APl is never defined
    for ax in panels.values():
        assert [line.get_label() for line in ax.get_lines()] == ["long", "short"]
        assert ax.get_xlabel() == "iteration"
    long_loss, short_loss = panels["loss"].get_lines()
    np.testing.assert_array_equal(long_loss.get_xdata(), [2, 4, 6, 8])  # the iteration records, not the epochs'
    np.testing.assert_array_equal(long_loss.get_ydata(), [4.0, 3.0, 2.0, 1.0])
    np.testing.assert_array_equal(panels["loss_box_reg"].get_lines()[1].get_ydata(), [2.25, 1.875])
    np.testing.assert_array_equal(panels["lr"].get_lines()[0].get_ydata(), [0.005, 0.01, 0.01, 0.001])
    long_ap, short_ap = panels["AP50"].get_lines()  # from the evaluated epoch records
    np.testing.assert_array_equal(long_ap.get_xdata(), [4, 8])
    np.testing.assert_array_equal(long_ap.get_ydata(), [0.2, 0.6])
    np.testing.assert_array_equal(short_ap.get_ydata(), [0.4, 0.5])
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_epoch_axis_lines_up_runs_of_different_schedules(two_runs):
    panels = _panels(plot_runs(two_runs, x="epoch", labels=["A", "B"]))
    long_ap, short_ap = panels["AP"].get_lines()
    assert (long_ap.get_label(), short_ap.get_label()) == ("A", "B")
    np.testing.assert_array_equal(long_ap.get_xdata(), [1.0, 2.0])  # iteration 4 and 8 of 4 steps an epoch
    np.testing.assert_array_equal(short_ap.get_xdata(), [1.0, 2.0])  # iteration 2 and 4 of 2 steps an epoch
    np.testing.assert_array_equal(panels["loss"].get_lines()[1].get_xdata(), [1.0, 2.0])
    assert panels["AP"].get_xlabel() == "epoch"


def test_a_run_without_iteration_records_plots_its_epoch_records(tmp_path):
    old = _write(tmp_path / "old", [_ep(0, 5, 2.0), _ep(1, 10, 1.0, 0.4)])  # the committed ablation logs' format
    panels = _panels(plot_runs([old], x="epoch"))
    np.testing.assert_array_equal(panels["loss"].get_lines()[0].get_xdata(), [1.0, 2.0])
    np.testing.assert_array_equal(panels["loss"].get_lines()[0].get_ydata(), [2.0, 1.0])
    np.testing.assert_array_equal(panels["AP"].get_lines()[0].get_ydata(), [0.4])


def test_two_trained_runs_and_the_command_line(tmp_path, capsys):
    from engine.trainer import RunOptions, fit

    torch.set_num_threads(1)
    runs = []
    for seed in (0, 1):
        cfg = load_config(REPO / "config/small_cpu.yaml", {
            "model.backbone.width_mult": 0.25, "model.encoder.channels": 32, "model.encoder.mid_channels": 8,
            "data.root": str(tmp_path / "synth"), "data.synthetic.num_train": 8, "data.synthetic.num_val": 2,
            "data.synthetic.image_size": [64, 64], "data.train_min_size": [64], "data.train_max_size": 64,
            "data.test_min_size": 64, "data.test_max_size": 64, "data.num_workers": 0, "solver.batch_size": 4,
            "solver.reference_batch_size": 4, "solver.warmup_iters": 1, "train.log_period": 1, "train.seed": seed})
        fit(cfg, RunOptions(tmp_path / f"seed{seed}", device=torch.device("cpu"), max_iter=4, progress=False))
        runs.append(tmp_path / f"seed{seed}")
    main([*map(str, runs), "--out", str(tmp_path / "both.png"), "--x", "epoch"])
    assert "2 run(s)" in capsys.readouterr().out and (tmp_path / "both.png").is_file()
    panels = _panels(plot_runs(runs))
    assert {"loss", "loss_cls", "loss_box_reg", "lr", "AP", "AP50"} <= set(panels)
    for title, ax in panels.items():
        assert [line.get_label() for line in ax.get_lines()] == ["seed0", "seed1"], title
    # losses and lr: a point per step (train.log_period=1); AP: the final evaluation, at step 4
    np.testing.assert_array_equal(panels["loss"].get_lines()[0].get_xdata(), [1, 2, 3, 4])
    np.testing.assert_array_equal(panels["AP50"].get_lines()[1].get_xdata(), [4])


def test_ablate_plot_draws_every_logged_run_of_a_spec(tmp_path, capsys, monkeypatch):
    import yaml

    import ablate
    import tools.plot_runs

    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump({"name": "tiny", "base": str(REPO / "config/small_cpu.yaml"), "seeds": [0, 1],
                                    "rows": [{"name": "base"},
                                             {"name": "k1", "overrides": {"model.decoder.pred_kernel": 1}}]}))
    logs = tmp_path / "logs"
    for row, seed in [("base", 0), ("base", 1), ("k1", 0)]:  # k1/seed1 has not run
        _write(logs / "tiny" / row / f"seed{seed}", [_it(2, 2, 3.0 + seed, 0.01), _ep(0, 2, 3.0, 0.1 * (seed + 1))])
    readme = tmp_path / "README.md"
    readme.write_text("<!-- ablation:tiny:start -->\n<!-- ablation:tiny:end -->\n")
    figures = []
    real = tools.plot_runs.plot_runs
    monkeypatch.setattr(tools.plot_runs, "plot_runs", lambda *a, **k: figures.append(real(*a, **k)) or figures[-1])
    out = tmp_path / "curves.png"
    assert ablate.main([str(spec), "--table-only", "--plot", str(out), "--readme", str(readme),
                        "--logs-dir", str(logs)]) == 0
    assert f"{out}: curves of 3 run(s)" in capsys.readouterr().out and out.is_file()
    for ax in figures[0].axes:
        assert [line.get_label() for line in ax.get_lines()] == ["base/seed0", "base/seed1", "k1/seed0"]
