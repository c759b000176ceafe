"""--compile: torch.compile of the dense network, in place, wired into train.py (solver.compile) and eval.py.

Inductor compiles for minutes on a CPU, so these tests use torch.compile's ``eager`` backend (dynamo traces the
same modules, no code is generated): they check the wiring and that compiling changes no name and no number.
The speed of inductor is measured, not tested (bench/bench_compile.py, docs/deployment.md).
"""
from __future__ import annotations

import torch

import eval as eval_script
import models.compile
import train as train_script
from config import load_config
from utils.checkpoint import load_checkpoint
from engine.trainer import RunOptions, fit
from models import build_model
from models.compile import COMPILED_PARTS, compile_model
from models.fuse import prepare_for_inference
from tests.conftest import REPO

SMALL = {"model.backbone.width_mult": 0.25, "model.encoder.channels": 32, "model.encoder.mid_channels": 8}


def test_compile_is_in_place_changes_no_output_and_the_inference_copy_runs_eager():
    cfg = load_config(REPO / "config/small_cpu.yaml", {**SMALL, "model.test.score_thresh": 0.0})
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    reference = build_model(cfg).eval()
    reference.load_state_dict(model.state_dict())
    names = list(model.state_dict())
    assert compile_model(model, backend="eager") is model
    assert list(model.state_dict()) == names  # no "_orig_mod." prefix: checkpoints load either way
    assert all(getattr(model, n)._compiled_call_impl is not None for n in COMPILED_PARTS)
    x = [torch.rand(3, 128, 160) * 255]
    with torch.no_grad():
        got, want = model(x)[0], reference(x)[0]
    assert len(want["scores"]) > 0
    for k in ("boxes", "scores", "labels"):
        torch.testing.assert_close(got[k], want[k])
    fused = prepare_for_inference(model)  # what evaluation runs: folded BN, not the compiled training modules
    assert all(m._compiled_call_impl is None for m in fused.modules())


def test_train_and_eval_flags(tmp_path, monkeypatch):
    assert train_script.parse_args(["--compile"]).opts == ["solver.compile=true"]
    assert train_script.parse_args([]).opts == []
    assert eval_script.parse_args(["--compile"]).compile and not eval_script.parse_args([]).compile
    # solver.compile=true reaches the trainer's model: a recording backend sees the graphs dynamo hands it
    graphs = []

    def recording_backend(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    monkeypatch.setattr(models.compile, "BACKEND", recording_backend)
    cfg = load_config(REPO / "config/small_cpu.yaml", {
        **SMALL, "solver.compile": True, "data.root": str(tmp_path / "synth"), "data.synthetic.num_train": 8,
        "data.synthetic.num_val": 2, "data.synthetic.image_size": [96, 96], "data.train_min_size": [96],
        "data.train_max_size": 96, "data.test_min_size": 96, "data.test_max_size": 96, "solver.batch_size": 4,
        "solver.reference_batch_size": 4, "solver.warmup_iters": 1, "data.num_workers": 0})
    fit(cfg, RunOptions(tmp_path / "run", device=torch.device("cpu"), max_iter=2, progress=False))
    assert graphs, "no graph was compiled: solver.compile did not reach the trained model"
    state = load_checkpoint(tmp_path / "run" / "last.pth")
    assert state["iteration"] == 2 and set(state["model"]) == set(build_model(cfg).state_dict())
