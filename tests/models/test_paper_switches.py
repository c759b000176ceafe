"""The paper's ablations as switches: the encoder (off, projector only, no shortcut), the decoder without implicit
objectness, and the ATSS and top-1 matchers, each on a small hand-computed case; the defaults stay official."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from config import ConfigError, load_config
from config.schema import DecoderConfig, EncoderConfig
from models import build_model
from models.anchors import AnchorGenerator
from models.build import build_encoder
from models.decoder import Decoder, combine_objectness
from models.encoder import C5Projection, DilatedBottleneck, DilatedEncoder
from models.matcher import MATCHERS, ATSSMatcher, UniformMatcher, build_matcher
from tests.conftest import REPO


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- encoder
# C5 with 16 channels, encoder width 8, bottleneck width 4, BN. Parameters by hand (weights + biases, BN: 2 per channel):
#   C5Projection            1x1 16->8: 16*8 + 8 = 136
#   projector               1x1 16->8: 136, BN 16; 3x3 8->8: 8*8*9 + 8 = 584, BN 16            -> 752
#   one dilated block       1x1 8->4: 36, BN 8; 3x3 4->4: 4*4*9 + 4 = 148, BN 8; 1x1 4->8: 40, BN 16  -> 256
SMALL = EncoderConfig(channels=8, mid_channels=4)


def test_encoder_switches_change_the_parameters_as_counted_by_hand():
    assert _params(build_encoder(SMALL, in_channels=16)) == 752 + 4 * 256  # official: projector + 4 blocks
    assert _params(build_encoder(dataclasses.replace(SMALL, dilations=(2, 4)), in_channels=16)) == 752 + 2 * 256
    assert _params(build_encoder(dataclasses.replace(SMALL, residual=False), in_channels=16)) == 752
    assert _params(build_encoder(dataclasses.replace(SMALL, shortcut=False), in_channels=16)) == 752 + 4 * 256
    no_encoder = build_encoder(dataclasses.replace(SMALL, enabled=False), in_channels=16)
    assert isinstance(no_encoder, C5Projection) and _params(no_encoder) == 136


def test_quickstart_model_loses_the_encoder_parameters_counted_by_hand():
    # quickstart: C5 of a quarter-width ResNet-18 = 128 channels, encoder width 128, bottleneck 32.
    # projector 128*128 + 128 + 256 + 128*128*9 + 128 + 256 = 164608; a block 4128 + 64 + 9248 + 64 + 4224 + 256 = 17984;
    # no encoder: 128*128 + 128 = 16512
    def count(**overrides):
        return _params(build_model(load_config(REPO / "config/small_cpu.yaml", overrides)))

    full = count()
    assert full - count(**{"model.encoder.residual": False}) == 4 * 17984
    assert full - count(**{"model.encoder.enabled": False}) == 164608 + 4 * 17984 - 16512
    assert full == count(**{"model.encoder.shortcut": False})
    assert full - count(**{"model.encoder.dilations": [2, 4]}) == 2 * 17984


def test_projector_only_is_the_encoder_without_blocks():
    torch.manual_seed(0)
    a = build_encoder(dataclasses.replace(SMALL, residual=False), in_channels=16).eval()
    torch.manual_seed(0)
    b = DilatedEncoder(16, 8, 4, dilations=()).eval()
    x = torch.randn(2, 16, 5, 7)
    assert len(a.blocks) == 0 and torch.equal(a(x), b(x))


def test_block_without_shortcut_outputs_its_branch_alone():
    x = torch.randn(2, 8, 5, 5)
    for shortcut, expected in ((True, x), (False, torch.zeros_like(x))):
        block = DilatedBottleneck(8, 4, dilation=2, shortcut=shortcut).eval()
        torch.nn.init.zeros_(block.norm3.weight)  # the branch ends in act(0 * ... + 0) = 0
        assert torch.equal(block(x), expected)
    block = DilatedBottleneck(8, 4, dilation=2, shortcut=False).eval()
    with_shortcut = DilatedBottleneck(8, 4, dilation=2).eval()
    with_shortcut.load_state_dict(block.state_dict())
    assert torch.allclose(with_shortcut(x), x + block(x))


def test_no_encoder_is_one_1x1_conv():
    torch.manual_seed(0)
    enc = build_encoder(dataclasses.replace(SMALL, enabled=False), in_channels=16)
    x = torch.randn(2, 16, 3, 4)
    assert torch.allclose(enc(x), F.conv2d(x, enc.conv.weight, enc.conv.bias))
    assert enc(x).shape == (2, 8, 3, 4) and enc.out_channels == 8


# ----------------------------------------------------------------------------- decoder
def test_decoder_without_implicit_objectness_returns_the_class_logits():
    torch.manual_seed(0)
    dec = Decoder(8, num_classes=3, num_anchors=2, implicit_objectness=False).eval()
    torch.manual_seed(0)
    official = Decoder(8, num_classes=3, num_anchors=2).eval()
    assert dec.object_pred is None
    assert _params(official) - _params(dec) == 8 * 2 * 9 + 2  # object_pred: 3x3 conv 8 -> 2 anchors, with bias
    x = torch.randn(1, 8, 4, 5)
    cls, box = dec(x)
    assert torch.equal(cls, dec.cls_score(dec.cls_subnet(x))) and box.shape == (1, 8, 4, 5)
    off_cls, _ = official(x)
    obj = official.object_pred(official.bbox_subnet(x))
    assert torch.equal(off_cls, combine_objectness(official.cls_score(official.cls_subnet(x)), obj, 3))


def test_official_defaults_are_unchanged():
    e, d = EncoderConfig(), DecoderConfig()
    assert (e.enabled, e.residual, e.shortcut, d.implicit_objectness) == (True, True, True, True)
    cfg = load_config(REPO / "config/small_cpu.yaml")
    explicit = load_config(REPO / "config/small_cpu.yaml", {
        "model.encoder.enabled": True, "model.encoder.residual": True, "model.encoder.shortcut": True,
        "model.decoder.implicit_objectness": True, "model.matcher.atss.topk": 5})
    torch.manual_seed(0)
    model = build_model(cfg)
    torch.manual_seed(0)
    same = build_model(explicit)
    assert isinstance(model.encoder, DilatedEncoder) and all(b.shortcut for b in model.encoder.blocks)
    assert model.decoder.object_pred is not None and type(model.assigner.matcher) is UniformMatcher
    assert model.assigner.matcher.by_prediction and model.assigner.matcher.topk == 4
    a, b = model.state_dict(), same.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- matchers
# A 3x3 map, stride 32, offset 0, two anchors per cell (32 and 64 px): cell (x, y) is centred at (32x, 32y), and
# anchor index = (3y + x) * 2 + a, a = 0 for the 32-px anchor and 1 for the 64-px one.
ANCHORS = AnchorGenerator(32, (32, 64), (1.0,))(3, 3)

# Box B1 = [0, 4, 44, 44]: centre (22, 24), area 44 * 40 = 1760. Squared centre distances: cell (1,1) 10^2 + 8^2 = 164,
# (0,1) 22^2 + 8^2 = 548, (1,0) 10^2 + 24^2 = 676, (0,0) 1060, ... -> the k = 6 candidates are anchors 8, 9, 6, 7, 2, 3.
#   a8  [16, 16, 48, 48]   inter 28 * 28 =  784, union 1024 + 1760 -  784 = 2000 -> IoU 0.39200, centre (32, 32) inside
#   a9  [0, 0, 64, 64]     inter 1760 (holds B1),  union 4096               -> IoU 0.42969, centre (32, 32) inside
#   a6  [-16, 16, 16, 48]  inter 16 * 28 =  448, union 2336                 -> IoU 0.19178
#   a7  [-32, 0, 32, 64]   inter 32 * 40 = 1280, union 4576                 -> IoU 0.27972
#   a2  [16, -16, 48, 16]  inter 28 * 12 =  336, union 2448                 -> IoU 0.13725
#   a3  [0, -32, 64, 32]   inter 44 * 28 = 1232, union 4624                 -> IoU 0.26644
# mean 0.28281; sample std (n - 1) sqrt(0.0632456 / 5) = 0.11247 -> threshold 0.39528: a9 is the only positive.
# a8 (0.392, centre inside) is below it, though above mean + the population std (0.28281 + 0.10267 = 0.38548).
B1 = [0.0, 4.0, 44.0, 44.0]
# Box B2 = [0, 2, 56, 34]: centre (28, 18), area 56 * 32 = 1792. Squared distances: (1,1) 16 + 196 = 212, (1,0) 16 + 324
# = 340, (0,1) 784 + 196 = 980, (0,0) 1108 ... -> candidates 8, 9, 2, 3, 6, 7.
#   a8  inter 32 * 18 =  576, union 2240 -> 0.25714      a9  inter 1792, union 4096 -> 0.43750, centre (32, 32) inside
#   a2  inter 32 * 14 =  448, union 2368 -> 0.18919      a3  inter 56 * 30 = 1680, union 4208 -> 0.39924,
#   a6  inter 16 * 18 =  288, union 2528 -> 0.11392          centre (32, 0) outside (above the box's top y = 2)
#   a7  inter 32 * 32 = 1024, union 4864 -> 0.21053
# mean 0.26792, sample std sqrt(0.0793259 / 5) = 0.12596 -> threshold 0.39388: a9 and a3 reach it, but a3's centre is
# outside the box, so a9 is the only positive.
B2 = [0.0, 2.0, 56.0, 34.0]


def _match(matcher, *images):
    gts = [torch.tensor(b, dtype=torch.float32).reshape(-1, 4) for b in images]
    preds = ANCHORS[None].repeat(len(gts), 1, 1)
    return [(m.src.tolist(), m.tgt.tolist()) for m in matcher(preds, ANCHORS, gts)]


def test_atss_by_hand_threshold_and_centre_rule():
    atss = ATSSMatcher(topk=6)
    assert _match(atss, [B1]) == [([9], [0])]
    assert _match(atss, [B2]) == [([9], [0])]
    # anchor 9 is positive for both boxes: it goes to B2, of higher IoU (0.4375 > 0.4297); batched with an empty image
    assert _match(atss, [B1, B2], [B1], []) == [([9], [1]), ([9], [0]), ([], [])]
    assert _match(atss, [B2, B1]) == [([9], [0])]
    # an 8-px box centred between four cells holds no anchor centre: ATSS gives it no positive (none is forced)
    assert _match(atss, [[44.0, 44.0, 52.0, 52.0]]) == [([], [])]


def test_atss_threshold_follows_the_k_nearest_candidates():
    # k = 2: the nearest cell's two anchors. B1: mean + std of (0.392, 0.42969) = 0.41084 + 0.02665 = 0.43749 -> none;
    # B2: (0.25714, 0.4375) -> 0.34732 + 0.12753 = 0.47485 -> none
    assert _match(ATSSMatcher(topk=2), [B1], [B2]) == [([], []), ([], [])]
    # k = 4 for B2: anchors 8, 9, 2, 3 (0.25714, 0.4375, 0.18919, 0.39924): mean 0.32077 + sample std 0.11711 =
    # 0.43788, just above a9's 0.4375 -> none; with k = 6 the two far candidates lower it to 0.39388 (above)
    assert _match(ATSSMatcher(topk=4), [B2]) == [([], [])]
    assert _match(ATSSMatcher(topk=6), [B2]) == [([9], [0])]
    with pytest.raises(ValueError, match="at least 2"):
        ATSSMatcher(topk=1)


def test_top1_is_each_boxs_nearest_anchor_and_not_uniform_k1():
    box = [20.0, 20.0, 50.0, 50.0]  # (cx, cy, w, h) = (35, 35, 30, 30); L1 to anchor 8 (32, 32, 32, 32): 3+3+2+2 = 10,
    top1 = build_matcher("top1")  # to anchor 9: 3+3+34+34 = 74, to any other >= 29 + 29 + 2 + 2
    assert isinstance(top1, UniformMatcher) and (top1.topk, top1.by_prediction) == (1, False)
    preds = ANCHORS[None].clone()
    preds[0, 0] = torch.tensor(box)  # anchor 0 predicts the box exactly: uniform matching's prediction half takes it
    gt = [torch.tensor([box])]
    assert top1(preds, ANCHORS, gt)[0].src.tolist() == [8]
    assert UniformMatcher(1)(preds, ANCHORS, gt)[0].src.tolist() == [0, 8]
    # two boxes, one image: one pair each, box order
    # 2nd box (64, 32, 56, 56): L1 to anchor 11 (64, 32, 64, 64) 8 + 8 = 16, to anchor 10 (64, 32, 32, 32) 24 + 24 = 48
    m = top1(ANCHORS[None], ANCHORS, [torch.tensor([box, [36.0, 4.0, 92.0, 60.0]])])[0]
    assert (m.src.tolist(), m.tgt.tolist()) == ([8, 11], [0, 1])


def test_new_matchers_are_registered_and_configured():
    assert {"atss", "top1"} <= set(MATCHERS)
    assert build_matcher("atss", topk=6).topk == 6 and build_matcher("atss").topk == 9
    cfg = load_config(REPO / "config/small_cpu.yaml", {"model.matcher.name": "atss", "model.matcher.atss.topk": 6})
    model = build_model(cfg)
    assert isinstance(model.assigner.matcher, ATSSMatcher) and model.assigner.matcher.topk == 6
    with pytest.raises(ConfigError, match=r"model\.matcher\.atss\.topk"):
        load_config(REPO / "config/small_cpu.yaml", {"model.matcher.atss.topk": 1})
    with pytest.raises(ConfigError, match="model.matcher.name"):
        load_config(REPO / "config/small_cpu.yaml", {"model.matcher.name": "atts"})


@pytest.mark.parametrize("overrides", [
    {"model.encoder.enabled": False}, {"model.encoder.residual": False}, {"model.encoder.shortcut": False},
    {"model.decoder.implicit_objectness": False}, {"model.matcher.name": "atss"}, {"model.matcher.name": "top1"}])
def test_every_switch_builds_a_model_that_trains(overrides):
    cfg = load_config(REPO / "config/small_cpu.yaml", {**overrides, "model.encoder.channels": 32,
                                                         "model.encoder.mid_channels": 8})
    torch.manual_seed(0)
    model = build_model(cfg).train()
    images = [torch.rand(3, 96, 128) * 255, torch.rand(3, 64, 96) * 255]
    targets = [{"boxes": torch.tensor([[10.0, 10, 60, 50], [70, 20, 120, 90]]), "labels": torch.tensor([1, 3])},
               {"boxes": torch.tensor([[20.0, 8, 52, 40]]), "labels": torch.tensor([0])}]
    out = model(images, targets)
    loss = out["loss_cls"] + out["loss_box_reg"]
    loss.backward()
    assert torch.isfinite(loss) and out["num_foreground"] > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
