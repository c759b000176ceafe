"""Parity with the official YOLOF code on ../shared/golden (encoder, decoder, anchors, box coder, inference)."""
from __future__ import annotations

import math

import numpy as np
import torch

from models.anchors import AnchorGenerator
from models.box_coder import BoxCoder
from models.decoder import Decoder
from models.detector import flatten_head_output
from models.encoder import DilatedEncoder
from models.postprocess import postprocess
from tests.conftest import load_golden
from utils.convert_official import convert_state_dict

T = torch.from_numpy


def _small_head():
    g = load_golden("head_small")
    # C5 in 64, encoder 32 channels, mid 8, dilations 2/4/6/8, K=7, A=5 (golden README section 1).
    encoder = DilatedEncoder(64, 32, 8, (2, 4, 6, 8), "bn").eval()
    decoder = Decoder(32, num_classes=7, num_anchors=5).eval()
    official = {k: T(v) for k, v in g.items() if k.startswith(("encoder.", "decoder."))}
    ours, dropped = convert_state_dict(official)
    assert not dropped
    head = torch.nn.ModuleDict({"encoder": encoder, "decoder": decoder})
    head.load_state_dict(ours, strict=True)  # every official tensor has exactly one home
    return g, encoder, decoder


def test_encoder_decoder_forward_matches_official():
    g, encoder, decoder = _small_head()
    with torch.no_grad():
        feat = encoder(T(g["input"]))
        cls, reg = decoder(feat)
    np.testing.assert_allclose(feat.numpy(), g["encoder_out"], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(reg.numpy(), g["bbox_reg"], atol=1e-5, rtol=1e-5)
    # includes the entries where the official 1e8 exp() clamp is active
    assert g["clamp_mask"].sum() > 0
    np.testing.assert_allclose(cls.numpy(), g["cls_logits"], atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(flatten_head_output(cls, 7).numpy(), g["cls_logits_N_HWA_K"], atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(flatten_head_output(reg, 4).numpy(), g["bbox_reg_N_HWA_4"], atol=1e-5, rtol=1e-5)


def test_anchors_match_official():
    g = load_golden("anchors_boxcoder")
    gen = AnchorGenerator(32, (32, 64, 128, 256, 512), (1.0,), 0.0)
    np.testing.assert_array_equal(gen.cell_anchors.numpy(), g["cell_anchors"])
    np.testing.assert_array_equal(gen(7, 9).numpy(), g["anchors"])
    # hand check: anchor 5*(1*9+2)+1 is the 64-px anchor at cell (x=2, y=1): centre (64, 32)
    assert gen(7, 9)[5 * (1 * 9 + 2) + 1].tolist() == [32.0, 0.0, 96.0, 64.0]


def test_box_coder_matches_official():
    g = load_golden("anchors_boxcoder")
    anchors, deltas = T(g["anchors"]), T(g["deltas"])
    clamp = BoxCoder(ctr_clamp=32)
    no_clamp = BoxCoder(ctr_clamp=None)
    w10 = BoxCoder(weights=(10, 10, 5, 5), ctr_clamp=32)
    assert math.isclose(clamp.scale_clamp, math.log(1000 / 16))
    kw = dict(atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(clamp.decode(deltas, anchors).numpy(), g["decoded_ctr_clamp"], **kw)
    np.testing.assert_allclose(no_clamp.decode(deltas, anchors).numpy(), g["decoded_no_ctr_clamp"], **kw)
    np.testing.assert_allclose(w10.decode(deltas, anchors).numpy(), g["decoded_weights_10_10_5_5_ctr_clamp"], **kw)
    np.testing.assert_allclose(clamp.decode(T(g["deltas_batched"]), anchors).numpy(), g["decoded_batched_ctr_clamp"], **kw)
    src, gt = T(g["encode_src_boxes"]), T(g["encode_gt_boxes"])
    np.testing.assert_allclose(clamp.encode(src, gt).numpy(), g["encoded_deltas"], atol=1e-6)
    np.testing.assert_allclose(w10.encode(src, gt).numpy(), g["encoded_deltas_weights_10_10_5_5"], atol=1e-6)
    enc = clamp.encode(src, gt)
    np.testing.assert_allclose(no_clamp.decode(enc, src).numpy(), g["encode_roundtrip_decoded_no_ctr_clamp"], **kw)
    np.testing.assert_allclose(clamp.decode(enc, src).numpy(), g["encode_roundtrip_decoded_ctr_clamp"], **kw)


def test_stride_decode_method_scales_offset_by_stride():
    anchors = torch.tensor([[0.0, 0.0, 128.0, 128.0]])  # centre (64, 64), size 128
    deltas = torch.tensor([[0.5, -0.25, 0.0, 0.0]])
    box = BoxCoder(ctr_clamp=None, decode_method="stride", stride=32).decode(deltas, anchors)
    # centre offset = delta * 32 px (not * 128): (64 + 16, 64 - 8); size unchanged
    assert torch.allclose(box, torch.tensor([[16.0, -8.0, 144.0, 120.0]]))
    assert torch.allclose(BoxCoder(ctr_clamp=None, decode_method="stride", stride=32).encode(anchors, box), deltas)


def _run_inference(box_cls, box_delta, anchors, size_hw):
    k = 7
    cls = flatten_head_output(T(box_cls), k)
    reg = flatten_head_output(T(box_delta), 4)
    sizes = [tuple(int(v) for v in size_hw)] * cls.shape[0]
    return postprocess(cls, reg, T(anchors), BoxCoder(ctr_clamp=32), sizes, sizes, 0.05, 1000, 0.6, 100)


def test_inference_matches_official():
    g = load_golden("inference")
    out = _run_inference(g["box_cls"], g["box_delta"], g["anchors"], g["image_size_hw"])
    for i in range(2):
        np.testing.assert_array_equal(out[i]["labels"].numpy(), g[f"post_classes_{i}"])
        np.testing.assert_allclose(out[i]["scores"].numpy(), g[f"post_scores_{i}"], atol=1e-6)
        np.testing.assert_allclose(out[i]["boxes"].numpy(), g[f"post_boxes_{i}"], atol=1e-4)


def test_inference_topk_cut_matches_official():
    g = load_golden("inference")
    out = _run_inference(g["big_box_cls"], g["big_box_delta"], g["big_anchors"], g["big_image_size_hw"])
    h, w = (int(v) for v in g["big_image_size_hw"])
    # the official raw output is unclipped; clip it to compare with our post-processed boxes
    ref = g["big_boxes"].copy()
    ref[:, 0::2] = ref[:, 0::2].clip(0, w)
    ref[:, 1::2] = ref[:, 1::2].clip(0, h)
    nonempty = (ref[:, 2] > ref[:, 0]) & (ref[:, 3] > ref[:, 1])
    np.testing.assert_array_equal(out[0]["labels"].numpy(), g["big_classes"][nonempty])
    np.testing.assert_allclose(out[0]["scores"].numpy(), g["big_scores"][nonempty], atol=1e-6)
    np.testing.assert_allclose(out[0]["boxes"].numpy(), ref[nonempty], atol=1e-4)


def test_batched_inference_equals_per_image():
    g = load_golden("inference")
    both = _run_inference(g["box_cls"], g["box_delta"], g["anchors"], g["image_size_hw"])
    for i in range(2):
        single = _run_inference(g["box_cls"][i : i + 1], g["box_delta"][i : i + 1], g["anchors"], g["image_size_hw"])[0]
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(single[key], both[i][key])
