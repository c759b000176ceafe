"""The model builder, input contract, official checkpoint conversion and bad input."""
from __future__ import annotations

import json

import cv2
import pytest
import torch
from torch import nn

from config import load_config
from config.listing import family_names
from config.schema import DecoderConfig, EncoderConfig
from models import build_model
from models.anchors import AnchorGenerator
from models.box_coder import BoxCoder
from models.cspdarknet import CSPDarkNet53
from models.decoder import combine_objectness
from models.detector import flatten_head_output
from models.encoder import C5Projection, DilatedEncoder
from models.layers import FrozenBatchNorm2d  # torchvision's, applied in the input's dtype
from models.matcher import ATSSMatcher, GridMatcher, IoUTopKMatcher, MaxIoUMatcher, UniformMatcher
from models.postprocess import postprocess
from tests.conftest import COCO_SPLIT, REPO, golden_path
from utils.checkpoint import load_model_weights, save_checkpoint
from tools.convert_official import convert_checkpoint, convert_key, convert_state_dict, detect_preset


@pytest.fixture(scope="module")
def r50():
    return build_model(load_config(REPO / "config/yolof_r50_c5_1x.yaml")).eval()


def _official_layout():
    return json.loads(golden_path("state_dict_r50_c5.json").read_text())


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
    sd["anchor_generator.cell_anchors.0"] = torch.tensor([[-s / 2, -s / 2, s / 2, s / 2]
                                                          for s in (32, 64, 128, 256, 512)])
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


@pytest.fixture(scope="module")
def r50_with_official_seeded(r50):
    """(official seeded state dict, r50 loaded with its conversion): every tensor of distinct random values."""
    official = _random_official_state_dict(_official_layout())
    ours, _ = convert_state_dict(official)
    r50.load_state_dict(ours, strict=True)
    return official, r50


def _by_value(model):
    """Our modules indexed by the first values of their weight (all distinct in the seeded state dict)."""
    return {(tuple(m.weight.shape), tuple(m.weight.detach().flatten()[:6].tolist())): (n, m)
            for n, m in model.named_modules() if isinstance(getattr(m, "weight", None), torch.Tensor)}


def _find(index, tensor):
    return index[(tuple(tensor.shape), tuple(tensor.flatten()[:6].tolist()))]


# Hand-written from the official naming (cvpods ResNet: res2..res5, 'shortcut' is the projection, conv{n}.norm
# its BN; YOLOF: dilated_encoder_blocks.i.conv{n}.{0 conv, 1 BN}) and ours (torchvision ResNet, encoder.blocks).
OFFICIAL_TO_OURS = {
    "backbone.stem.conv1.weight": "backbone.conv1.weight",
    "backbone.stem.conv1.norm.running_var": "backbone.bn1.running_var",
    "backbone.res2.0.shortcut.weight": "backbone.layer1.0.downsample.0.weight",  # same shape as conv3: (256, 64, 1, 1)
    "backbone.res2.0.conv3.weight": "backbone.layer1.0.conv3.weight",
    "backbone.res2.0.shortcut.norm.bias": "backbone.layer1.0.downsample.1.bias",
    "backbone.res2.0.conv3.norm.bias": "backbone.layer1.0.bn3.bias",
    "backbone.res3.0.conv1.weight": "backbone.layer2.0.conv1.weight",
    "backbone.res4.5.conv2.norm.running_mean": "backbone.layer3.5.bn2.running_mean",
    "backbone.res5.2.conv1.norm.weight": "backbone.layer4.2.bn1.weight",
    "encoder.dilated_encoder_blocks.3.conv2.0.weight": "encoder.blocks.3.conv2.weight",
    "encoder.dilated_encoder_blocks.3.conv2.1.running_mean": "encoder.blocks.3.norm2.running_mean",
    "encoder.dilated_encoder_blocks.0.conv3.1.num_batches_tracked": "encoder.blocks.0.norm3.num_batches_tracked",
    "encoder.lateral_norm.bias": "encoder.lateral_norm.bias",
    "decoder.cls_subnet.3.weight": "decoder.cls_subnet.3.weight",
    "decoder.bbox_subnet.10.running_var": "decoder.bbox_subnet.10.running_var",
    "decoder.object_pred.bias": "decoder.object_pred.bias",
    "pixel_mean": "pixel_mean",
}


def test_converter_puts_every_official_tensor_where_it_belongs(r50_with_official_seeded):
    official, model = r50_with_official_seeded
    own = model.state_dict()
    for k_off, k in OFFICIAL_TO_OURS.items():
        assert torch.equal(own[k], official[k_off]), (k_off, k)
    # every official tensor lands, value for value, in the model; the model has nothing else
    float_keys = {k for k, v in own.items() if v.is_floating_point()}
    index = {(tuple(v.shape), tuple(v.flatten()[:6].tolist())): k for k, v in own.items() if k in float_keys}
    assert len(index) == len(float_keys)  # distinct values: the lookup below is unambiguous
    landed = set()
    for k_off, v in official.items():
        if k_off == "anchor_generator.cell_anchors.0" or not v.is_floating_point():
            continue
        k = index[(tuple(v.shape), tuple(v.flatten()[:6].tolist()))]
        assert torch.equal(own[k], v), k_off
        landed.add(k)
    assert landed == float_keys


def test_every_official_conv_keeps_its_geometry(r50_with_official_seeded):
    """All 76 convs of state_dict_r50_c5.json: the conv that receives the official weight has the official
    in/out channels, kernel, stride (on the 1x1 in res3-5: STRIDE_IN_1X1), padding, dilation, groups and bias."""
    official, model = r50_with_official_seeded
    index = _by_value(model)
    convs = _official_layout()["conv_layers"]
    assert len(convs) == 76
    for c in convs:
        name, m = _find(index, official[c["name"] + ".weight"])
        assert isinstance(m, torch.nn.Conv2d), name
        got = (m.in_channels, m.out_channels, list(m.kernel_size), list(m.stride), list(m.padding), list(m.dilation),
               m.groups, m.bias is not None)
        want = (c["in_channels"], c["out_channels"], c["kernel_size"], c["stride"], c["padding"], c["dilation"],
                c["groups"], c["bias"])
        assert got == want, (c["name"], name)
        if c["bias"]:
            assert torch.equal(m.bias, official[c["name"] + ".bias"]), c["name"]


def test_every_official_norm_keeps_its_kind_eps_and_statistics(r50_with_official_seeded):
    official, model = r50_with_official_seeded
    index = _by_value(model)
    norms = _official_layout()["norm_layers"]
    assert len(norms) == 73
    for n in norms:
        name, m = _find(index, official[n["name"] + ".weight"])
        frozen = n["type"].endswith("FrozenBatchNorm2d")
        assert isinstance(m, FrozenBatchNorm2d if frozen else torch.nn.BatchNorm2d), (n["name"], name)
        assert m.eps == n["eps"] == 1e-5, n["name"]
        if not frozen:
            assert m.momentum == n["momentum"], n["name"]
        for attr in ("bias", "running_mean", "running_var"):  # each statistic in its own slot, none swapped
            assert torch.equal(getattr(m, attr), official[f"{n['name']}.{attr}"]), (n["name"], attr)


def test_requires_grad_and_input_format_match_official(r50_with_official_seeded):
    _, model = r50_with_official_seeded
    layout = _official_layout()
    params = dict(model.named_parameters())
    for e in layout["state_dict"]:
        k = convert_key(e["key"])
        if e["kind"] == "parameter":
            assert params[k].requires_grad == e["requires_grad"], e["key"]  # FREEZE_AT=2: stem and res2 frozen
    inp = layout["input"]
    cfg = load_config(REPO / "config/yolof_r50_c5_1x.yaml")
    assert cfg.model.input_format == inp["FORMAT"] == "BGR"
    assert list(cfg.model.pixel_mean) == inp["PIXEL_MEAN"] and list(cfg.model.pixel_std) == inp["PIXEL_STD"]
    r50 = build_model(cfg)
    assert (r50.pixel_mean.flatten().tolist() == pytest.approx(inp["PIXEL_MEAN"])
            and r50.pixel_std.flatten().tolist() == inp["PIXEL_STD"])
    assert r50.size_divisibility == 0  # "padded only to the max H,W in the batch, NOT to a multiple of 32"
    train = [["ResizeShortestEdge", {"short_edge_length": list(cfg.data.train_min_size),
                                     "max_size": cfg.data.train_max_size, "sample_style": "choice"}],
             ["RandomFlip", {}], ["RandomShift", {"max_shifts": cfg.data.shift_max}]]
    assert train == inp["TRAIN_PIPELINES"] and cfg.data.pipeline == "resize_shortest_edge"
    assert cfg.data.flip_prob == 0.5 and cfg.data.random_shift and cfg.data.shift_prob == 0.5  # the class defaults
    assert inp["TEST_PIPELINES"] == [["ResizeShortestEdge", {"short_edge_length": cfg.data.test_min_size,
                                                             "max_size": cfg.data.test_max_size,
                                                             "sample_style": "choice"}]]
    # a 200 x 280 image gives a 7 x 9 C5 map (stride 32, no padding to a multiple of 32)
    batch, sizes = r50.preprocess([torch.zeros(3, 200, 280)])
    assert batch.shape[-2:] == (200, 280) and sizes == [(200, 280)]


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


def _real_images(coco_tiny, names):
    """RGB float tensors (3, H, W) of tests/assets images (quickstart is RGB)."""
    out = []
    for n in names:
        img = cv2.imread(str(coco_tiny / COCO_SPLIT / n))[:, :, ::-1].copy()
        out.append(torch.from_numpy(img).permute(2, 0, 1).float())
    return out


def test_quickstart_model_runs_on_real_coco_images_of_mixed_sizes(coco_tiny):
    # landscape 640x480, portrait 428x640 and a small 320x240: one padded 640x640 batch
    names = ["000000005001.jpg", "000000333956.jpg", "000000404484.jpg"]
    images = _real_images(coco_tiny, names)
    torch.manual_seed(0)
    model = build_model(load_config(REPO / "config/small_cpu.yaml", {"model.test.score_thresh": 0.0})).eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 3
    for name, x, o in zip(names, images, out):
        h, w = x.shape[1:]
        b = o["boxes"]
        # threshold 0: up to the 100 best after NMS, however fresh the head (fewer where boxes fall in the padding)
        assert 50 < len(b) <= 100, name
        assert (b.dtype == torch.float32 and o["labels"].dtype == torch.int64
                and len(o["scores"]) == len(o["labels"]) == len(b))
        # each image's boxes are clipped to its own size, not to the padded batch
        assert (b >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all(), name
        assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all(), name
        assert torch.all(o["scores"][:-1] >= o["scores"][1:]) and ((o["scores"] > 0) & (o["scores"] < 1)).all()
        assert ((o["labels"] >= 0) & (o["labels"] < model.num_classes)).all()
    # the big anchors (up to 512 px) reach past every border: clipping shows at the small image's own edges
    small = out[2]["boxes"]
    assert (small[:, 2] == 320).any() and (small[:, 3] == 240).any()


def test_outputs_are_rescaled_to_output_sizes():
    torch.manual_seed(0)
    model = build_model(load_config(REPO / "config/small_cpu.yaml", {"model.test.score_thresh": 0.0})).eval()
    x = torch.rand(3, 128, 160) * 255
    with torch.no_grad():
        a = model([x])[0]
        b = model([x], output_sizes=[(256, 480)])[0]  # h x 2, w x 3
    # the same detections, in the same order, at three times the x and twice the y coordinates; clipping to
    # the output size is clipping to the input size, scaled
    assert len(a["boxes"]) == len(b["boxes"]) > 50
    assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["scores"], b["scores"])
    torch.testing.assert_close(b["boxes"], a["boxes"] * torch.tensor([3.0, 2.0, 3.0, 2.0]), atol=1e-3, rtol=0)
    assert (a["boxes"][:, 2] == 160).any() and (b["boxes"][:, 2] == 480).any()  # clipped at the border in both


def test_anchor_order_is_the_head_flatten_order_on_a_non_square_map():
    # a 3 x 5 map (H != W), 2 anchor sizes, 3 classes: encode (y, x, a, k) into the head output itself
    h, w, a, k, stride = 3, 5, 2, 3, 16
    gen = AnchorGenerator(stride, (32, 64), (1.0,), 0.0)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    head = torch.zeros(1, a * k, h, w)
    for ai in range(a):
        for ki in range(k):
            head[0, ai * k + ki] = yy * 1000 + xx * 100 + ai * 10 + ki  # channel a*K + k, as the decoder writes
    rows = flatten_head_output(head, k)[0]  # (H*W*A, K)
    anchors = gen(h, w)
    assert rows.shape == (h * w * a, k) and anchors.shape == (h * w * a, 4)
    for r in range(h * w * a):
        code = rows[r].long()
        y, x, ai = int(code[0]) // 1000, int(code[0]) // 100 % 10, int(code[0]) // 10 % 10
        assert (code % 10).tolist() == list(range(k))  # the K columns are the classes in order
        s = (32, 64)[ai]
        # the anchor of the same row sits at cell (x, y) with size s: centre (x * stride, y * stride)
        assert anchors[r].tolist() == [x * stride - s / 2, y * stride - s / 2,
                                       x * stride + s / 2, y * stride + s / 2], r


def test_postprocess_clips_each_image_of_a_batch_to_its_own_size():
    # one anchor, one class; the box (-20, -10, 170, 90) sticks out of both images (h, w): (50, 150) and (80, 100)
    anchors = torch.tensor([[-20.0, -10.0, 170.0, 90.0]])
    logits = torch.full((2, 1, 1), 3.0)
    deltas = torch.zeros(2, 1, 4)
    coder = BoxCoder(ctr_clamp=None)
    out = postprocess(logits, deltas, anchors, box_coder=coder, image_sizes=[(50, 150), (80, 100)])
    assert out[0]["boxes"].tolist() == [[0.0, 0.0, 150.0, 50.0]]
    assert out[1]["boxes"].tolist() == [[0.0, 0.0, 100.0, 80.0]]
    # rescaled to (100, 300) and (40, 50): scale first (x2, x3 / x0.5, x0.5), then clip to the output size
    out = postprocess(logits, deltas, anchors, box_coder=coder, image_sizes=[(50, 150), (80, 100)],
                      output_sizes=[(100, 300), (40, 50)])
    assert out[0]["boxes"].tolist() == [[0.0, 0.0, 300.0, 100.0]]
    assert out[1]["boxes"].tolist() == [[0.0, 0.0, 50.0, 40.0]]
    # a box entirely outside its image is dropped, in that image only
    anchors = torch.tensor([[110.0, 10.0, 140.0, 40.0]])  # inside image 0 (w 150), right of image 1 (w 100)
    out = postprocess(logits, deltas, anchors, box_coder=coder, image_sizes=[(50, 150), (80, 100)])
    assert out[0]["boxes"].tolist() == [[110.0, 10.0, 140.0, 40.0]] and out[1]["boxes"].shape == (0, 4)


@pytest.mark.parametrize("bad, message", [
    (torch.rand(64, 64, 3), "HWC"),
    (torch.rand(1, 64, 64), "3 channels"),
    (torch.rand(3, 0, 64), "empty"),
    (torch.rand(64, 64), "3 dimensions"),
])
def test_bad_image_layouts_raise_clear_errors(bad, message):
    model = build_model(load_config(REPO / "config/small_cpu.yaml")).eval()
    with pytest.raises(ValueError, match=message):
        model([bad])


def test_checkpoint_mismatch_names_the_problem(tmp_path):
    small = build_model(load_config(REPO / "config/small_cpu.yaml"))
    path = tmp_path / "ckpt.pth"
    save_checkpoint(path, {"model": small.state_dict()})
    other = build_model(load_config(REPO / "config/small_cpu.yaml", {"model.num_classes": 9}))
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
    blk = build_model(load_config(REPO / "config/yolof_r50_c5_1x.yaml",
                                  {"model.backbone.style": "pytorch",
                                   "model.backbone.weights": "none"})).backbone.layer2[0]
    assert blk.conv1.stride == (1, 1) and blk.conv2.stride == (2, 2)


def test_freeze_at_two_freezes_stem_and_first_stage():
    model = build_model(load_config(REPO / "config/yolof_r50_c5_1x.yaml"))
    bb = model.backbone
    assert not bb.conv1.weight.requires_grad and not bb.layer1[0].conv1.weight.requires_grad
    assert bb.layer2[0].conv1.weight.requires_grad


def test_imagenet_weights_are_never_downloaded_and_say_what_to_do(monkeypatch):
    from models import pretrained

    def no_download(*a, **k):
        raise AssertionError("nothing may be downloaded at run time")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", REPO / "tests" / "no_such_dir")
    cfg = load_config(REPO / "config/small_cpu.yaml", {"model.backbone.width_mult": 1.0,
                                                        "model.backbone.weights": "imagenet"})
    model = build_model(cfg)  # building never reads the ImageNet file
    with pytest.raises(pretrained.WeightsError, match=r"resnet18-.*\.pth not found: download it from "
                                                      r"https://download.pytorch.org/models/resnet18-.*\.pth "
                                                      r"and put it at"):
        pretrained.load_pretrained(model, cfg.model.backbone)


# ----------------------------------------------------------------------------- every switch, config to model
# Each switch of the paper and each family name goes through build_model(cfg): the module that results (its type,
# layers and arguments, checked against the published architecture or the value in the config) and, for the paper's
# switches, its numerics against the same weights with the switch the other way. A switch that build_model does not
# pass on (hard-wired, or read from the wrong key) fails here.
TINY = {"model.backbone.width_mult": 0.25, "model.encoder.channels": 16, "model.encoder.mid_channels": 8}


def _model(seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(load_config(REPO / "config" / "small_cpu.yaml", {**TINY, **overrides})).eval()


def _c5(model, seed=1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(2, model.backbone.out_channels, 5, 7)


@torch.no_grad()
def test_encoder_switches_reach_the_built_encoder():
    on, off = _model(), _model(**{"model.encoder.shortcut": False})
    a, b = on.state_dict(), off.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the shortcut has no weights
    assert all(blk.shortcut for blk in on.encoder.blocks) and not any(blk.shortcut for blk in off.encoder.blocks)
    e = on.encoder
    x = e.fpn_norm(e.fpn_conv(e.lateral_norm(e.lateral_conv(_c5(on)))))  # the projector's output
    for b_on, b_off in zip(on.encoder.blocks, off.encoder.blocks):  # without the shortcut: the branch alone
        torch.testing.assert_close(b_off(x), b_on(x) - x)
        x = b_on(x)
    projector = _model(**{"model.encoder.residual": False})
    assert isinstance(projector.encoder, DilatedEncoder) and len(projector.encoder.blocks) == 0
    y = _c5(projector)
    e = projector.encoder
    torch.testing.assert_close(e(y), e.fpn_norm(e.fpn_conv(e.lateral_norm(e.lateral_conv(y)))))
    none = _model(**{"model.encoder.enabled": False})
    assert isinstance(none.encoder, C5Projection) and list(none.encoder.children()) == [none.encoder.conv]
    assert none.encoder.conv.kernel_size == (1, 1) and none.encoder.conv.out_channels == 16
    dil = _model(**{"model.encoder.dilations": [1, 3, 5]})
    assert [b.conv2.dilation for b in dil.encoder.blocks] == [(1, 1), (3, 3), (5, 5)]
    assert [b.conv2.padding for b in dil.encoder.blocks] == [(1, 1), (3, 3), (5, 5)]


@torch.no_grad()
def test_decoder_switches_reach_the_built_decoder():
    on, off = _model(), _model(**{"model.decoder.implicit_objectness": False})
    feat = torch.randn(1, 16, 4, 6)
    d = off.decoder
    assert off.decoder.object_pred is None and on.decoder.object_pred is not None
    cls_off, _ = d(feat)
    torch.testing.assert_close(cls_off, d.cls_score(d.cls_subnet(feat)))  # the class logits as they are
    cls_on, _ = on.decoder(feat)
    expected = combine_objectness(on.decoder.cls_score(on.decoder.cls_subnet(feat)),
                                  on.decoder.object_pred(on.decoder.bbox_subnet(feat)), on.num_classes)
    torch.testing.assert_close(cls_on, expected)
    k1 = _model(**{"model.decoder.pred_kernel": 1}).decoder
    assert {m.kernel_size for m in (k1.cls_score, k1.bbox_pred, k1.object_pred)} == {(1, 1)}
    assert {m.kernel_size for m in (on.decoder.cls_score, on.decoder.bbox_pred, on.decoder.object_pred)} == {(3, 3)}
    towers = _model(**{"model.decoder.num_cls_convs": 1, "model.decoder.num_reg_convs": 3}).decoder
    assert sum(isinstance(m, nn.Conv2d) for m in towers.cls_subnet) == 1
    assert sum(isinstance(m, nn.Conv2d) for m in towers.bbox_subnet) == 3


@pytest.mark.parametrize("name", family_names()["model.matcher.name"])
def test_every_matcher_name_builds_that_matcher_with_its_section(name):
    m = _model(**{"model.matcher.name": name, "model.matcher.uniform.topk": 3, "model.matcher.iou_topk.topk": 5,
                  "model.matcher.max_iou.pos_thresh": 0.6, "model.matcher.max_iou.neg_thresh": 0.3,
                  "model.matcher.atss.topk": 7, "model.matcher.grid.anchors": "all"}).assigner.matcher
    expected = {
        "uniform": (UniformMatcher, {"topk": 3, "by_prediction": True}),
        "top1": (UniformMatcher, {"topk": 1, "by_prediction": False}),
        "iou_topk": (IoUTopKMatcher, {"topk": 5}),
        "max_iou": (MaxIoUMatcher, {"pos_thresh": 0.6, "neg_thresh": 0.3}),
        "atss": (ATSSMatcher, {"topk": 7}),
        **{f"grid_{mode}": (GridMatcher, {"mode": mode, "anchor_choice": "all", "stride": 32.0, "num_anchors": 5})
           for mode in ("center", "neighbors", "inside")},
    }[name]  # small_cpu: stride 32, five anchor sizes
    assert type(m) is expected[0] and {k: getattr(m, k) for k in expected[1]} == expected[1]


def test_assigner_and_loss_switches_reach_the_model():
    m = _model(**{"model.matcher.ignore_thresholds": False, "model.matcher.neg_ignore_thresh": 0.8,
                  "model.matcher.pos_ignore_thresh": 0.2, "model.loss.image_mask": True,
                  "model.loss.normalization": "per_image", "model.loss.focal_alpha": 0.3,
                  "model.loss.focal_gamma": 1.5, "model.loss.cls_weight": 2.0, "model.loss.box_weight": 3.0})
    a, c = m.assigner, m.criterion
    assert (a.ignore_thresholds, a.neg_ignore_thresh, a.pos_ignore_thresh, a.image_mask) == (False, 0.8, 0.2, True)
    assert (c.normalization, c.focal_alpha, c.focal_gamma, c.cls_weight, c.box_weight) == ("per_image", 0.3, 1.5, 2, 3)
    d = _model()
    assert (d.assigner.ignore_thresholds, d.assigner.image_mask, d.criterion.normalization) == (True, False, "batch")


def _losses(model) -> dict:
    """The losses of one batch: image 0 holds two boxes, image 1 one box (so the positives per image differ)."""
    images = [torch.full((3, 96, 128), 90.0), torch.full((3, 64, 96), 160.0)]
    targets = [{"boxes": torch.tensor([[10.0, 10, 60, 50], [70, 20, 120, 90]]), "labels": torch.tensor([1, 3])},
               {"boxes": torch.tensor([[20.0, 8, 52, 40]]), "labels": torch.tensor([0])}]
    with torch.no_grad():
        return model.train()(images, targets)


def test_loss_switches_change_the_loss_of_the_same_weights():
    """The same weights and batch: per-image normalisation, the image mask and the ignore thresholds each move the
    loss, so a switch build_model drops leaves it equal and fails here."""
    base = _losses(_model())
    for key, value in (("model.loss.normalization", "per_image"), ("model.loss.image_mask", True),
                       ("model.matcher.ignore_thresholds", False)):
        other = _losses(_model(**{key: value}))
        assert (other["loss_cls"], other["loss_box_reg"]) != (base["loss_cls"], base["loss_box_reg"]), key


def _stage_blocks(backbone) -> list[int]:
    return [len(getattr(backbone, f"layer{i}")) for i in range(1, 5)]


@pytest.mark.parametrize("name", family_names()["model.backbone.name"])
def test_every_backbone_name_builds_its_published_architecture(name):
    """Blocks per stage and cardinality as published: ResNet (He et al. 2016, table 1), ResNeXt (Xie et al. 2017:
    32x4d, 32x8d, 64x4d), CSP-DarkNet-53 (1, 2, 8, 8, 4 blocks)."""
    bb = _model(**{"model.backbone.name": name, "model.backbone.width_mult": 0.25}).backbone
    if name == "cspdarknet53":
        assert isinstance(bb, CSPDarkNet53) and bb.stride == 32
        return
    published = {"resnet18": ([2, 2, 2, 2], "BasicBlock", 1), "resnet34": ([3, 4, 6, 3], "BasicBlock", 1),
                 "resnet50": ([3, 4, 6, 3], "Bottleneck", 1), "resnet101": ([3, 4, 23, 3], "Bottleneck", 1),
                 "resnext50_32x4d": ([3, 4, 6, 3], "Bottleneck", 32),
                 "resnext101_32x8d": ([3, 4, 23, 3], "Bottleneck", 32),
                 "resnext101_64x4d": ([3, 4, 23, 3], "Bottleneck", 64)}[name]
    assert _stage_blocks(bb) == published[0] and type(bb.layer1[0]).__name__ == published[1]
    assert bb.layer1[0].conv2.groups == published[2] and bb.stride == 32


def test_backbone_switches_reach_the_built_backbone():
    r50 = {"model.backbone.name": "resnet50"}
    dc5 = _model(**r50, **{"model.backbone.dilated_c5": True})
    assert dc5.backbone.stride == 16 and dc5.anchor_generator.stride == 16 and dc5.box_coder.stride == 16
    assert dc5.backbone.layer4[0].conv2.stride == (1, 1) and dc5.backbone.layer4[1].conv2.dilation == (2, 2)
    caffe, pytorch = (_model(**r50, **{"model.backbone.style": s}).backbone for s in ("caffe", "pytorch"))
    assert (caffe.layer2[0].conv1.stride, caffe.layer2[0].conv2.stride) == ((2, 2), (1, 1))  # stride on the 1x1
    assert (pytorch.layer2[0].conv1.stride, pytorch.layer2[0].conv2.stride) == ((1, 1), (2, 2))  # on the 3x3
    for k, frozen in ((0, []), (1, ["conv1"]), (2, ["conv1", "layer1"]), (5, ["conv1", "layer1", "layer4"])):
        bb = _model(**{"model.backbone.freeze_at": k}).backbone
        for part in ("conv1", "layer1", "layer4"):
            assert all(p.requires_grad != (part in frozen) for p in getattr(bb, part).parameters()), (k, part)
    norms = {n: _model(**{"model.backbone.norm": n}).backbone for n in family_names()["model.backbone.norm"]}
    assert type(norms["frozen_bn"].bn1) is FrozenBatchNorm2d
    assert type(norms["bn"].bn1) is nn.BatchNorm2d and type(norms["syncbn"].bn1) is nn.BatchNorm2d  # DDP converts


@pytest.mark.parametrize("part", ["encoder", "decoder"])
def test_every_norm_and_activation_name_reaches_the_encoder_and_decoder(part):
    expected_norm = {"bn": nn.BatchNorm2d, "syncbn": nn.BatchNorm2d, "gn": nn.GroupNorm, "none": nn.Identity}
    for name in family_names()[f"model.{part}.norm"]:
        module = getattr(_model(**{f"model.{part}.norm": name}), part)
        norms = [m for m in module.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.Identity))]
        assert norms and all(type(m) is expected_norm[name] for m in norms), name
    leaky = getattr(_model(**{f"model.{part}.activation": "leaky_relu"}), part)
    acts = [m for m in leaky.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU))]
    assert acts and all(type(m) is nn.LeakyReLU and m.negative_slope == 0.1 for m in acts)
    relu = getattr(_model(), part)
    assert all(type(m) is nn.ReLU for m in relu.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU)))


def test_decode_method_and_custom_anchors_reach_the_model():
    """A delta of (1, 0, 0, 0) on a 64-px anchor centred at 32 moves the centre by the anchor's width (64 px,
    official) or by the stride (32 px); custom (w, h) anchors replace sizes x ratios, one decoder output each."""
    anchor, delta = torch.tensor([[0.0, 0, 64, 64]]), torch.tensor([[1.0, 0, 0, 0]])
    for method, cx in (("anchor", 96.0), ("stride", 64.0)):
        coder = _model(**{"model.box_coder.decode_method": method, "model.box_coder.ctr_clamp": 0}).box_coder
        box = coder.decode(delta, anchor)[0]
        assert ((box[0] + box[2]) / 2).item() == cx and (box[2] - box[0]).item() == 64.0, method
    m = _model(**{"model.anchors.custom_wh": [[10, 20], [30, 15], [40, 40]]})
    assert m.anchor_generator(1, 1).tolist() == [[-5, -10, 5, 10], [-15, -7.5, 15, 7.5], [-20, -20, 20, 20]]
    assert m.decoder.num_anchors == 3 and m.decoder.cls_score.out_channels == 3 * m.num_classes
    assert m.assigner.matcher.topk == 4 and _model().decoder.num_anchors == 5


# ----------------------------------------------------------------------------- the paper's switches
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
