"""The model builder, input contract, official checkpoint conversion and bad input."""
from __future__ import annotations

import json

import cv2
import pytest
import torch

from config import load_config
from models import build_model
from tests.conftest import GOLDEN, REPO
from utils.checkpoint import load_model_weights, save_checkpoint
from utils.convert_official import convert_checkpoint, convert_key, convert_state_dict, detect_preset


@pytest.fixture(scope="module")
def r50():
    return build_model(load_config(REPO / "config/yolof_r50_c5_1x.yaml")).eval()


def _official_layout():
    path = GOLDEN / "state_dict_r50_c5.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent (../shared/golden)")
    return json.loads(path.read_text())


def test_r50_c5_parameter_count_equals_official(r50):
    layout = _official_layout()
    assert sum(p.numel() for p in r50.parameters()) == layout["num_parameters_total"] == 44_113_001
    assert sum(p.numel() for p in r50.parameters() if p.requires_grad) == layout["num_parameters_trainable"]


def _random_official_state_dict(layout):
    g = torch.Generator().manual_seed(0)
    sd = {}
    for e in layout["state_dict"]:
        if e["dtype"] == "int64":
            sd[e["key"]] = torch.zeros(e["shape"], dtype=torch.int64)
        else:
            sd[e["key"]] = torch.rand(e["shape"], generator=g) + 0.5  # positive: valid BN variances
    sd["anchor_generator.cell_anchors.0"] = torch.tensor([[-s / 2, -s / 2, s / 2, s / 2] for s in (32, 64, 128, 256, 512)])
    return sd


def test_converter_maps_every_official_key(r50):
    layout = _official_layout()
    official = _random_official_state_dict(layout)
    ours, dropped = convert_state_dict(official)
    assert list(dropped) == ["anchor_generator.cell_anchors.0"]
    own = r50.state_dict()
    assert set(ours) == set(own)  # every key mapped, none left over
    for k_off, v in official.items():
        k = convert_key(k_off)
        if k is not None:
            assert tuple(own[k].shape) == tuple(v.shape), k_off
    with pytest.raises(KeyError, match="no counterpart"):
        convert_key("backbone.res6.0.conv1.weight")


def test_converted_checkpoint_builds_and_runs(tmp_path):
    layout = _official_layout()
    official = _random_official_state_dict(layout)
    src = tmp_path / "official.pth"
    torch.save({"model": official, "iteration": 22499}, src)
    assert detect_preset(official) == "yolof_r50_c5_1x"
    dst = tmp_path / "ours.pth"
    info = convert_checkpoint(src, dst)
    assert info["preset"] == "yolof_r50_c5_1x"
    model = build_model(load_config(REPO / "config/yolof_r50_c5_1x.yaml")).eval()
    ckpt = load_model_weights(model, dst)
    assert ckpt["config"]["model"]["backbone"]["name"] == "resnet50"
    k_off = "backbone.res4.3.conv2.norm.running_var"
    assert torch.equal(model.state_dict()[convert_key(k_off)], official[k_off])
    with torch.no_grad():
        out = model([torch.rand(3, 160, 224) * 255])
    assert set(out[0]) == {"boxes", "scores", "labels"}


def test_quickstart_model_runs_on_a_real_coco_image(coco_tiny):
    model = build_model(load_config(REPO / "config/quickstart.yaml")).eval()
    path = sorted((coco_tiny / "val2017").glob("*.jpg"))[0]
    img = cv2.imread(str(path))[:, :, ::-1].copy()  # quickstart is RGB
    x = torch.from_numpy(img).permute(2, 0, 1).float()
    with torch.no_grad():
        out = model([x, x[:, :200, :150]])
    assert len(out) == 2
    h, w = img.shape[:2]
    b = out[0]["boxes"]
    assert b.shape[1] == 4 and (b[:, 2] <= w).all() and (b[:, 3] <= h).all() and (b >= 0).all()
    assert out[0]["labels"].dtype == torch.int64


def test_outputs_are_rescaled_to_output_sizes():
    torch.manual_seed(0)
    model = build_model(load_config(REPO / "config/quickstart.yaml", {"model.test.score_thresh": 0.0})).eval()
    x = torch.rand(3, 128, 160) * 255
    with torch.no_grad():
        a = model([x])[0]
        b = model([x], output_sizes=[(256, 320)])[0]
    # same detections, twice the coordinates (clipping only at the larger border)
    n = min(len(a["boxes"]), len(b["boxes"]))
    assert n > 0
    assert torch.allclose(b["boxes"][:n], a["boxes"][:n] * 2, atol=1e-3)


@pytest.mark.parametrize("bad, message", [
    (torch.rand(64, 64, 3), "HWC"),
    (torch.rand(1, 64, 64), "3 channels"),
    (torch.rand(3, 0, 64), "empty"),
    (torch.rand(64, 64), "3 dimensions"),
])
def test_bad_image_layouts_raise_clear_errors(bad, message):
    model = build_model(load_config(REPO / "config/quickstart.yaml")).eval()
    with pytest.raises(ValueError, match=message):
        model([bad])


def test_checkpoint_mismatch_names_the_problem(tmp_path):
    small = build_model(load_config(REPO / "config/quickstart.yaml"))
    path = tmp_path / "ckpt.pth"
    save_checkpoint(path, {"model": small.state_dict()})
    other = build_model(load_config(REPO / "config/quickstart.yaml", {"model.num_classes": 9}))
    with pytest.raises(ValueError, match="shape mismatches.*decoder.cls_score"):
        load_model_weights(other, path)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        load_model_weights(small, tmp_path / "junk.pth")


def test_dc5_backbone_has_stride_16_and_dilated_first_block():
    model = build_model(load_config(REPO / "config/yolof_r50_dc5_1x.yaml"))
    assert model.backbone.stride == 16 and model.anchor_generator.stride == 16
    assert model.anchor_generator.num_anchors == 6
    first = model.backbone.layer4[0]
    assert first.conv2.dilation == (2, 2) and first.conv2.stride == (1, 1)
    with torch.no_grad():
        feat = model.backbone.eval()(torch.zeros(1, 3, 64, 96))
    assert feat.shape[-2:] == (4, 6)


def test_caffe_style_puts_stride_on_1x1():
    model = build_model(load_config(REPO / "config/yolof_r50_c5_1x.yaml"))
    blk = model.backbone.layer2[0]
    assert blk.conv1.stride == (2, 2) and blk.conv2.stride == (1, 1)
    blk = build_model(load_config(REPO / "config/yolof_r50_c5_1x.yaml", {"model.backbone.style": "pytorch"})).backbone.layer2[0]
    assert blk.conv1.stride == (1, 1) and blk.conv2.stride == (2, 2)


def test_freeze_at_two_freezes_stem_and_first_stage():
    model = build_model(load_config(REPO / "config/yolof_r50_c5_1x.yaml"))
    bb = model.backbone
    assert not bb.conv1.weight.requires_grad and not bb.layer1[0].conv1.weight.requires_grad
    assert bb.layer2[0].conv1.weight.requires_grad


def test_imagenet_weights_without_network_say_what_to_do(monkeypatch):
    from models import backbone as bb

    def no_network(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(bb, "WEIGHTS_DIR", REPO / "tests" / "no_such_dir")
    with pytest.raises(RuntimeError, match=r"download https://download.pytorch.org/models/resnet18-.*\.pth and put it at"):
        bb.build_backbone("resnet18", "pytorch", False, 2, "frozen_bn", "imagenet")
