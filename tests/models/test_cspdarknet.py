"""YOLOF-CSP-D-53-DC5 equals the official implementation (tests/fixtures/golden, README section 9).

The official seeded weights come from the fixture's own generator, run here as the README says
(``make_weights_generic.py official_zoo.json yolof.cspdarknet53.DC5.3x --seed 7``); they are converted
with ``tools/convert_official.py`` and loaded into the 3x preset, whose forward on the fixture's
320x320 BGR image must give the official res5, encoder, decoder, anchors and detections.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from config import ConfigError, load_config
from models import build_model
from models.cspdarknet import CSPDarkNet53
from models.layers import convert_sync_batchnorm
from tests.conftest import GOLDEN, REPO, golden_path, load_golden
from utils.checkpoint import load_model_weights
from tools.convert_official import convert_checkpoint, detect_preset, is_official_csp

ZOO = "yolof.cspdarknet53.DC5.3x"
OFFICIAL = {"yolof_csp_d53_dc5_3x": ZOO, "yolof_csp_d53_dc5_9x": "yolof.cspdarknet53.DC5.9x",
            "yolof_csp_d53_dc5_9x_stage2_3x": "yolof.cspdarknet53.DC5.9x.stage2.3x"}  # our preset -> official model
PRESETS = tuple(OFFICIAL)


def _zoo(model: str = ZOO) -> dict:
    return json.loads(golden_path("official_zoo.json").read_text())["models"][model]


def _preset(name: str = PRESETS[0], **overrides):
    return load_config(REPO / "config" / f"{name}.yaml", overrides)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The official seed-7 weights, made by the fixture's generator and converted to this project's format."""
    tmp = tmp_path_factory.mktemp("csp")
    official = tmp / "official_seed7.pth"
    subprocess.run([sys.executable, str(golden_path("make_weights_generic.py")), str(GOLDEN / "official_zoo.json"),
                    ZOO, "--seed", "7", "--out", str(official)], check=True, capture_output=True)
    info = convert_checkpoint(official, tmp / "ours.pth")
    assert info["preset"] == "yolof_csp_d53_dc5_3x" and info["dropped"] == ["anchor_generator.cell_anchors.0"]
    return tmp / "ours.pth"


@pytest.fixture(scope="module")
def official_run(converted):
    """(golden arrays, our outputs) for the fixture image through the converted official seed-7 weights."""
    model = build_model(_preset())
    load_model_weights(model, converted)
    model.eval()
    out = {}
    for part in ("backbone", "encoder", "decoder"):
        getattr(model, part).register_forward_hook(lambda m, i, o, part=part: out.__setitem__(part, o))
    g = load_golden("csp_d53_dc5")
    image = torch.from_numpy(g["image_bgr"]).permute(2, 0, 1)  # (3, 320, 320) uint8 BGR, no resize (section 9)
    with torch.no_grad():
        det = model([image])[0]
    ours = {"res5": out["backbone"][0], "encoder": out["encoder"][0], "decoder_cls": out["decoder"][0][0],
            "decoder_reg": out["decoder"][1][0], "anchors": model.anchor_generator(20, 20)[None], **det}
    return g, {k: v.numpy() for k, v in ours.items()}


@pytest.mark.parametrize("key", ["res5", "encoder", "decoder_cls", "decoder_reg", "anchors", "boxes", "scores"])
def test_forward_matches_official(official_run, key):
    g, ours = official_run
    ref = g[key]
    assert ours[key].shape == ref.shape
    # float32 through 53 layers: relative 1e-4, plus 2e-5 of the array's scale for values near 0
    np.testing.assert_allclose(ours[key], ref, rtol=1e-4, atol=2e-5 * float(np.abs(ref).max()))


def test_detections_match_official_labels_in_order(official_run):
    g, ours = official_run
    assert len(g["labels"]) == 100  # the cap is reached, so order and cut-off both count
    np.testing.assert_array_equal(ours["labels"], g["labels"])


@pytest.mark.parametrize("preset", PRESETS)
def test_parameter_counts_equal_official(preset):
    model = build_model(_preset(preset))
    official = _zoo(OFFICIAL[preset])
    assert sum(p.numel() for p in model.parameters()) == official["num_parameters_total"] == 48_266_078
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == official["num_parameters_trainable"] \
        == 48_011_006


def test_backbone_state_dict_is_the_official_layout():
    """Same names, shapes and order as the official backbone: official files load by name."""
    official = [(k[len("backbone."):], s) for k, s, _ in _zoo()["state_dict"] if k.startswith("backbone.")]
    ours = [(k, list(v.shape)) for k, v in CSPDarkNet53(dilated_c5=True).state_dict().items()]
    assert ours == official


def test_official_bn_settings_mish_and_freeze():
    net = CSPDarkNet53(dilated_c5=True, freeze_at=2, norm="syncbn")
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.eps == 1e-4 and m.momentum == 0.03 for m in norms)
    assert sum(isinstance(m, nn.Mish) for m in net.modules()) == 1 + 5 * 5 + sum((1, 2, 8, 8, 4))
    frozen = {n.split(".")[0] for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1", "bn1", "layer1", "layer2"}
    net.train()  # as official, frozen stages keep training-mode BN (batch statistics, running stats updated)
    before = net.layer1.base_layer[1].running_mean.clone()
    net(torch.randn(2, 3, 64, 64))
    assert not torch.equal(before, net.layer1.base_layer[1].running_mean)


@pytest.mark.parametrize("dilated_c5, stride", [(True, 16), (False, 32)])
def test_output_stride_and_dc5_dilation(dilated_c5, stride):
    net = CSPDarkNet53(dilated_c5=dilated_c5, width_mult=0.25).eval()
    assert net.stride == stride and net(torch.zeros(1, 3, 96, 128)).shape[-2:] == (96 // stride, 128 // stride)
    assert net.layer5.stage_layers[3].conv2.dilation == ((2, 2) if dilated_c5 else (1, 1))


def test_encoder_decoder_use_leaky_relu_01():
    model = build_model(_preset(**{"model.backbone.width_mult": 0.125, "model.backbone.weights": "none"}))
    for part in (model.encoder, model.decoder):
        acts = [m for m in part.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU))]
        assert acts and all(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.1 for m in acts)
    assert [b.conv2.dilation[0] for b in model.encoder.blocks] == list(range(1, 9))


def test_unknown_activation_is_a_config_error():
    with pytest.raises(ConfigError, match="model.encoder.activation"):
        _preset(**{"model.encoder.activation": "mish"})


def test_syncbn_is_bn_on_one_process_and_converted_under_ddp():
    model = build_model(_preset(**{"model.backbone.width_mult": 0.125, "model.backbone.weights": "none",
                                   "model.decoder.norm": "bn"}))
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    parts = {"backbone": "syncbn", "encoder": "syncbn", "decoder": "bn"}
    with pytest.raises(ValueError, match="model.backbone.norm=syncbn, model.encoder.norm=syncbn: .*CUDA"):
        convert_sync_batchnorm(model, parts, "cpu")
    convert_sync_batchnorm(model, parts, "cuda")  # the conversion itself runs anywhere
    for part, synced in (("backbone", True), ("encoder", True), ("decoder", False)):
        norms = [m for m in getattr(model, part).modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        assert norms and all(isinstance(m, nn.SyncBatchNorm) == synced for m in norms)
    assert all(m.eps == 1e-4 and m.momentum == 0.03
               for m in model.backbone.modules() if isinstance(m, nn.SyncBatchNorm))


def test_converter_detects_csp_from_keys():
    csp = {k: torch.zeros(s) for k, s, _ in _zoo()["state_dict"]}
    r50 = {k: torch.zeros(s) for k, s, _ in _zoo("yolof.res50.C5.1x")["state_dict"]}
    assert is_official_csp(csp) and not is_official_csp(r50)
    assert detect_preset(csp) == "yolof_csp_d53_dc5_3x"


def test_imagenet_file_in_official_names_loads(tmp_path):
    """The official cspdarknet53.pth holds the backbone under its own names (any 'backbone.' prefix and a
    classifier head are tolerated): every backbone tensor is filled from it."""
    from models.pretrained import load_backbone_weights

    source = CSPDarkNet53()
    state = {f"backbone.{k}": torch.randn_like(v) if v.is_floating_point() else v
             for k, v in source.state_dict().items()}
    state["fc.weight"] = torch.zeros(1000, 1024)
    torch.save(state, tmp_path / "cspdarknet53.pth")
    target = CSPDarkNet53(dilated_c5=True)
    info = load_backbone_weights(target, tmp_path / "cspdarknet53.pth")
    assert info["unused"] == ["fc.weight"]
    assert torch.equal(target.layer5.fuse_transition[0].weight, state["backbone.layer5.fuse_transition.0.weight"])


def test_missing_imagenet_file_names_where_to_put_it(tmp_path):
    from models.pretrained import WeightsError, load_pretrained

    cfg = _preset(**{"model.backbone.weights": str(tmp_path / "weights" / "cspdarknet53.pth")})
    with pytest.raises(WeightsError, match=r"cspdarknet53\.pth not found: download it from .* and put it at"):
        load_pretrained(CSPDarkNet53(), cfg.model.backbone)


def test_stage2_starts_from_a_converted_official_detector(converted):
    """The stage-2 preset starts from the whole 9x detector (train.init_from): a converted official CSP checkpoint
    (3x, 9x and stage 2 share one architecture) fits it tensor for tensor."""
    cfg = _preset(PRESETS[2])
    assert cfg.train.init_from == "weights/yolof_csp_d53_dc5_9x.pth" and cfg.model.matcher.neg_ignore_thresh == 0.8
    model = build_model(cfg)
    load_model_weights(model, converted)  # strict: every key and shape
    official = torch.load(converted, map_location="cpu", weights_only=True)["model"]
    assert torch.equal(model.state_dict()["backbone.layer3.stage_layers.7.conv2.weight"],
                       official["backbone.layer3.stage_layers.7.conv2.weight"])
