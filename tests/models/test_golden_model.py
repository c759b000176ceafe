"""Parity with the official YOLOF code on tests/fixtures/golden (encoder, decoder, anchors, box coder, inference)."""
from __future__ import annotations

import math

import numpy as np
import torch
import torchvision

import models.postprocess

from models.anchors import AnchorGenerator
from models.box_coder import BoxCoder
from models.decoder import Decoder, combine_objectness
from models.detector import flatten_head_output
from models.encoder import DilatedEncoder
from models.postprocess import postprocess
from tests.conftest import load_golden
from tools.convert_official import convert_state_dict

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


def test_decoder_raw_outputs_and_clamp_mask_match_official():
    g, encoder, decoder = _small_head()
    with torch.no_grad():
        feat = encoder(T(g["input"]))
        cls_raw = decoder.cls_score(decoder.cls_subnet(feat))  # (2, 35, 7, 9): before the objectness
        obj_raw = decoder.object_pred(decoder.bbox_subnet(feat))  # (2, 5, 7, 9): from the reg tower
    np.testing.assert_allclose(cls_raw.numpy(), g["cls_score_raw"], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(obj_raw.numpy(), g["objectness_raw"], atol=1e-5, rtol=1e-5)
    # the combination alone, on the official raw outputs
    combined = combine_objectness(T(g["cls_score_raw"]), T(g["objectness_raw"]), 7)
    np.testing.assert_allclose(combined.numpy(), g["cls_logits"], atol=1e-4, rtol=1e-5)
    # where the 1e8 clamp is active: class logit or its anchor's objectness above ln(1e8)
    cls5 = cls_raw.view(2, 5, 7, 7, 9)
    active = (cls5.exp() > 1e8) | (obj_raw.exp() > 1e8)[:, :, None]
    np.testing.assert_array_equal(active.view(2, 35, 7, 9).numpy().astype(np.uint8), g["clamp_mask"])
    # there the official value differs from the unclamped log(sigmoid * sigmoid), and ours follows the official one
    obj5 = T(g["objectness_raw"]).view(2, 5, 1, 7, 9)
    exact = (torch.nn.functional.logsigmoid(T(g["cls_score_raw"]).view(2, 5, 7, 7, 9))
             + torch.nn.functional.logsigmoid(obj5))
    exact = exact - torch.log1p(-exact.exp().clamp(max=1 - 1e-7))  # logit of the product
    mask = T(g["clamp_mask"]).bool()
    assert (exact.view(2, 35, 7, 9)[mask] - T(g["cls_logits"])[mask]).abs().max() > 0.1
    np.testing.assert_allclose(combined.numpy()[mask.numpy()], g["cls_logits"][mask.numpy()], atol=1e-4)


def test_anchors_match_official():
    g = load_golden("anchors_boxcoder")
    gen = AnchorGenerator(32, (32, 64, 128, 256, 512), (1.0,), 0.0)
    np.testing.assert_array_equal(gen.cell_anchors.numpy(), g["cell_anchors"])
    np.testing.assert_array_equal(gen(7, 9).numpy(), g["anchors"])
    # hand check: anchor 5*(1*9+2)+1 is the 64-px anchor at cell (x=2, y=1): centre (64, 32)
    assert gen(7, 9)[5 * (1 * 9 + 2) + 1].tolist() == [32.0, 0.0, 96.0, 64.0]


def test_every_golden_anchor_array_is_ours():
    gen = AnchorGenerator(32, (32, 64, 128, 256, 512), (1.0,), 0.0)
    mat, loss, inf = load_golden("matcher"), load_golden("loss"), load_golden("inference")
    for arr in (mat["anchors"][0], mat["anchors"][1], loss["anchors"], loss["nc_anchors"], inf["anchors"]):
        np.testing.assert_array_equal(gen(7, 9).numpy(), arr)
    np.testing.assert_array_equal(gen(15, 20).numpy(), inf["big_anchors"])
    # the encode cases start from real anchors
    g = load_golden("anchors_boxcoder")
    np.testing.assert_array_equal(g["anchors"][g["encode_anchor_idx"]], g["encode_src_boxes"])


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
    np.testing.assert_allclose(clamp.decode(T(g["deltas_batched"]), anchors).numpy(),
                               g["decoded_batched_ctr_clamp"], **kw)
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
    return postprocess(cls, reg, T(anchors), box_coder=BoxCoder(ctr_clamp=32), image_sizes=sizes, output_sizes=sizes,
                       score_thresh=0.05, topk_candidates=1000, nms_thresh=0.6, max_detections=100)


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


def _run_inference_recording_nms(monkeypatch, box_cls, box_delta, anchors, size_hw):
    """_run_inference, with the inputs and output of its batched_nms call recorded (a pass-through wrapper,
    as the golden fixture recorded the official code)."""
    calls = []

    def recording_nms(boxes, scores, groups, thresh):
        keep = torchvision.ops.batched_nms(boxes, scores, groups, thresh)
        calls.append((boxes.clone(), scores.clone(), groups.clone(), keep.clone()))
        return keep

    monkeypatch.setattr(models.postprocess, "batched_nms", recording_nms)
    out = _run_inference(box_cls, box_delta, anchors, size_hw)
    assert len(calls) == 1  # one NMS for the whole batch
    return out, calls[0]


def _per_image(recorded, i, k=7):
    """Image i's NMS candidates (boxes, scores, classes), its keep (indices into its candidates, in NMS order)
    and the raw output (candidates[keep][:100], unclipped), from the batched call's (image, class) groups."""
    boxes, scores, groups, keep = recorded
    mine = (groups // k) == i
    first = int(mine.nonzero()[0])
    assert mine[first:first + int(mine.sum())].all()  # each image's candidates are one block
    keep_i = keep[mine[keep]] - first
    cand = boxes[mine], scores[mine], groups[mine] % k
    return cand, keep_i, tuple(c[keep_i][:100] for c in cand)


def test_inference_candidates_nms_keep_and_raw_output_match_official(monkeypatch):
    g = load_golden("inference")
    _, recorded = _run_inference_recording_nms(monkeypatch, g["box_cls"], g["box_delta"], g["anchors"],
                                               g["image_size_hw"])
    for i in range(2):
        (cb, cs, cc), keep, (rb, rs, rc) = _per_image(recorded, i)
        # NMS inputs: top-k over anchors x classes, threshold 0.05, decoded with the centre clamp, unclipped
        np.testing.assert_array_equal(cc.numpy(), g[f"cand_classes_{i}"])
        np.testing.assert_allclose(cs.numpy(), g[f"cand_scores_{i}"], atol=1e-6)
        np.testing.assert_allclose(cb.numpy(), g[f"cand_boxes_{i}"], atol=1e-4)
        np.testing.assert_array_equal(keep.numpy(), g[f"nms_keep_{i}"])  # before the 100 cap
        # the official raw inference output (before detector_postprocess clips)
        np.testing.assert_array_equal(rc.numpy(), g[f"classes_{i}"])
        np.testing.assert_allclose(rs.numpy(), g[f"scores_{i}"], atol=1e-6)
        np.testing.assert_allclose(rb.numpy(), g[f"boxes_{i}"], atol=1e-4)
    # image 1's logits are low: the score threshold, not top-k, limits its candidates
    assert len(g["cand_scores_1"]) < 315 == len(g["cand_scores_0"])


def test_inference_topk_cut_nms_keep_and_raw_output_match_official(monkeypatch):
    g = load_golden("inference")
    _, recorded = _run_inference_recording_nms(monkeypatch, g["big_box_cls"], g["big_box_delta"], g["big_anchors"],
                                               g["big_image_size_hw"])
    (cb, cs, cc), keep, (rb, rs, rc) = _per_image(recorded, 0)
    assert len(cs) <= 1000 < 1500 * 7  # top-1000 of the 10500 scores, then the threshold
    np.testing.assert_array_equal(keep.numpy(), g["big_nms_keep"])
    np.testing.assert_array_equal(rc.numpy(), g["big_classes"])
    np.testing.assert_allclose(rs.numpy(), g["big_scores"], atol=1e-6)
    np.testing.assert_allclose(rb.numpy(), g["big_boxes"], atol=1e-4)


def test_batched_inference_equals_per_image():
    g = load_golden("inference")
    both = _run_inference(g["box_cls"], g["box_delta"], g["anchors"], g["image_size_hw"])
    for i in range(2):
        single = _run_inference(g["box_cls"][i : i + 1], g["box_delta"][i : i + 1], g["anchors"], g["image_size_hw"])[0]
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(single[key], both[i][key])
