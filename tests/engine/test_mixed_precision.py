"""Mixed precision on CPU, as on GPU: the network in bf16 / fp16, the numerics that need fp32 in fp32.

The R50-C5 model with seeded official-layout weights (converted as a user converts the zoo) on real COCO images:
under ``torch.autocast("cpu", bfloat16 | float16)`` its losses stay within 2% of fp32, its detections match
fp32's, and box decoding is exact to 0.05 px for anchors up to x, y = 1333 (a bf16 centre would be off by up to 8
px). Then ``train.py`` itself with ``solver.amp=bf16`` / ``fp16`` (a GradScaler on CPU).
"""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from config import load_config
from data.build import build_dataset
from deploy.compare import matched_fraction
from utils.checkpoint import load_model_weights
from models import build_model
from models.box_coder import BoxCoder
from tests.conftest import COCO_SPLIT, REPO
from tests.converted_checkpoint import write_converted_r50
from utils.precision import amp_context, resolve_amp

CPU = torch.device("cpu")
HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


@pytest.fixture(scope="module")
def r50_and_batch(coco_tiny, tmp_path_factory):
    """The converted R50-C5 and two real images (short side 320) with their boxes."""
    ckpt = write_converted_r50(tmp_path_factory.mktemp("amp") / "r50.pth")
    cfg = load_config(REPO / "config/yolof_r50_c5_1x.yaml", {
        "data.root": str(coco_tiny), "data.test_min_size": 320, "data.test_max_size": 512,
        "model.backbone.weights": "none"})
    model = build_model(cfg)
    load_model_weights(model, ckpt)
    ds = build_dataset(cfg, COCO_SPLIT, is_train=False)
    picked = [ds[i] for i in range(len(ds)) if len(ds.get_annotation(i)["boxes"]) >= 3][:2]
    images = [im for im, _ in picked]
    targets = [{"boxes": t["boxes"], "labels": t["labels"]} for _, t in picked]
    return model, images, targets


@pytest.fixture(scope="module")
def outputs(r50_and_batch):
    """Per precision: the training losses and the eval detections of the same model on the same images."""
    model, images, targets = r50_and_batch
    out = {}
    for amp in ("none", "bf16", "fp16"):
        with torch.no_grad(), amp_context(CPU, amp):
            dets = model.eval()(images)
            losses = copy.deepcopy(model).train()(images, targets)  # a copy: training mode updates BN statistics
        out[amp] = ({k: float(losses[k]) for k in ("loss_cls", "loss_box_reg")}, dets)
    return out


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_losses_under_autocast_are_within_2_percent_of_fp32(outputs, amp):
    ref, got = outputs["none"][0], outputs[amp][0]
    for k in ref:
        assert math.isfinite(got[k])
        assert got[k] == pytest.approx(ref[k], rel=0.02), (k, got[k], ref[k])


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_detections_under_autocast_match_fp32(outputs, amp):
    ref, got = outputs["none"][1], outputs[amp][1]
    for d in got:  # post-processing ran in fp32
        assert d["boxes"].dtype == d["scores"].dtype == torch.float32
    fraction, total = matched_fraction(ref, got, iou_thresh=0.9, score_tol=0.05, min_score=0.3)
    assert total >= 50, total
    assert fraction >= 0.95, (fraction, total)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_decoding_is_fp32_under_autocast(amp):
    """Half-precision deltas (as the head makes them) decode to within 0.05 px of their fp32 decoding for anchors
    whose centres reach x, y = 1333; the anchors themselves are never rounded to half precision."""
    g = torch.Generator().manual_seed(0)
    centres = torch.linspace(0, 1333, 400)
    cx, cy = centres, centres.flip(0)
    size = torch.tensor([32.0, 64, 128, 256, 512]).repeat(80)
    anchors = torch.stack([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2], 1)
    deltas = (torch.randn(400, 4, generator=g) * 0.3).to(HALF[amp])
    coder = BoxCoder()
    reference = coder.decode(deltas.float(), anchors)
    unclamped = BoxCoder(ctr_clamp=None)  # for the round trip: the 32-px centre clamp is not invertible
    with amp_context(CPU, amp):
        decoded = coder.decode(deltas, anchors)
        encoded = unclamped.encode(anchors, unclamped.decode(deltas, anchors))
    assert decoded.dtype == encoded.dtype == torch.float32
    assert (decoded - reference).abs().max() < 0.05
    torch.testing.assert_close(encoded, deltas.float(), atol=1e-3, rtol=0)
    # what the old decoding (anchors cast to the deltas' dtype) got wrong: a centre at x = 1186.24 in bf16
    assert abs(float(torch.tensor(1186.24).to(torch.bfloat16)) - 1186.24) > 2


def test_combine_objectness_survives_fp16_logits():
    """The implicit objectness of large logits: in fp16 the official 1e8 clamp overflows; here it runs in fp32."""
    from models.decoder import combine_objectness

    cls = torch.full((1, 3, 2, 2), 30.0, dtype=torch.float16)
    obj = torch.full((1, 1, 2, 2), 25.0, dtype=torch.float16)
    with amp_context(CPU, "fp16"):
        out = combine_objectness(cls, obj, 3)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    expected = combine_objectness(cls.float(), obj.float(), 3)
    torch.testing.assert_close(out, expected)


def test_amp_auto_resolves_by_the_device(caplog):
    ok, _ = __import__("utils.precision", fromlist=["cpu_bf16_support"]).cpu_bf16_support()
    with caplog.at_level("INFO"):
        assert resolve_amp("auto", CPU) == ("bf16" if ok else "none")
    assert "solver.amp=auto" in caplog.text
    assert resolve_amp("none", CPU) == "none"  # an unknown mode: refused when the config loads (test_families.py)
    with pytest.raises(ValueError, match="must be resolved"):
        amp_context(CPU, "auto")


# a quickstart run at test size: 64-px images, a narrow model
SMALL = ["model.backbone.width_mult=0.25", "model.encoder.channels=32", "model.encoder.mid_channels=8",
         "data.synthetic.num_train=64", "data.synthetic.num_val=8", "data.synthetic.image_size=[64, 64]",
         "data.train_min_size=[64]", "data.train_max_size=64", "data.test_min_size=64", "data.test_max_size=64",
         "solver.batch_size=4", "solver.reference_batch_size=4", "solver.warmup_iters=5", "train.log_period=1",
         "solver.max_iter=20", "solver.steps=[15]"]


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_train_py_runs_20_steps_under_amp_on_cpu(tmp_path, amp):
    import train

    out = tmp_path / amp
    train.main(["--config", str(REPO / "config/small_cpu.yaml"), "--output_dir", str(out), "--no_progress",
                "--opts", f"data.root={tmp_path / 'data'}", f"solver.amp={amp}", *SMALL])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r.get("type") == "iter"]
    assert records[-1]["iteration"] == 20 and "AP50" in records[-1]
    assert all(math.isfinite(r["loss"]) for r in steps)
    state = torch.load(out / "last.pth", weights_only=True)
    assert (state["scaler"] is not None) == (amp == "fp16")  # a GradScaler("cpu") for fp16, checkpointed
    assert state["scheduler"]["last_epoch"] == state["iteration"] == 20
