"""Parity with the official YOLOF matcher and loss on ../shared/golden."""
from __future__ import annotations

import numpy as np
import torch

from models.box_coder import BoxCoder
from models.criterion import YOLOFCriterion
from models.detector import flatten_head_output
from models.matcher import UniformMatcher
from tests.conftest import load_golden

T = torch.from_numpy


def test_uniform_matcher_matches_official_indices():
    g = load_golden("matcher")
    matcher = UniformMatcher(topk=4)
    for prefix in ("", "b_"):
        pred = T(g[f"{prefix}pred_boxes"])
        gts = [T(g[f"{prefix}gt_boxes_{i}"]) for i in range(2)]
        matches = matcher(pred, T(g["anchors"][0]), gts)
        for i, m in enumerate(matches):
            np.testing.assert_array_equal(m.src.numpy(), g[f"{prefix}src_idx_{i}"])  # order included
            np.testing.assert_array_equal(m.tgt.numpy(), g[f"{prefix}tgt_idx_{i}"])


def test_uniform_matcher_breaks_ties_by_lower_index():
    # Two anchors at exactly the same L1 distance from the box: the lower index wins on every device.
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0], [100.0, 100.0, 110.0, 110.0]])
    gt = [torch.tensor([[10.0, 0.0, 20.0, 10.0]])]  # centre (15, 5): anchors 0 and 1 both 10 px away
    m = UniformMatcher(topk=1)(anchors[None].clone(), anchors, gt)[0]
    assert m.src.tolist() == [0, 0] and m.tgt.tolist() == [0, 0]


def _official_loss_inputs(g, prefix):
    box_cls = T(g[f"{prefix}box_cls"]).clone().requires_grad_(True)
    box_delta = T(g[f"{prefix}box_delta"]).clone().requires_grad_(True)
    cls = flatten_head_output(box_cls, 7)
    deltas = flatten_head_output(box_delta, 4)
    anchors = T(g[f"{prefix}anchors"])
    gts = [T(g[f"{prefix}gt_boxes_{i}"]) for i in range(2)]
    labels = [T(g[f"{prefix}gt_classes_{i}"]) for i in range(2)]
    return box_cls, box_delta, cls, deltas, anchors, gts, labels


def test_loss_matches_official_values_labels_and_gradients():
    g = load_golden("loss")
    coder = BoxCoder(ctr_clamp=32)
    criterion = YOLOFCriterion(num_classes=7)
    for prefix in ("", "nc_"):
        box_cls, box_delta, cls, deltas, anchors, gts, labels = _official_loss_inputs(g, prefix)
        pred_boxes = coder.decode(deltas, anchors)
        np.testing.assert_allclose(pred_boxes.detach().numpy(), g[f"{prefix}predicted_boxes"], atol=1e-4)
        matches = UniformMatcher(4)(pred_boxes.detach(), anchors, gts)
        for i in range(2):
            np.testing.assert_array_equal(matches[i].src.numpy(), g[f"{prefix}src_idx_{i}"])
        assigned, _ = criterion.assign(pred_boxes.detach(), anchors, gts, labels, matches)
        np.testing.assert_array_equal(assigned.reshape(-1).numpy(), g[f"{prefix}assigned_labels"])
        out = criterion(cls, pred_boxes, anchors, gts, labels, matches)
        assert float(out["num_foreground"]) == float(g[f"{prefix}num_foreground"])
        np.testing.assert_allclose(out["loss_cls"].item(), float(g[f"{prefix}loss_cls"]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["loss_box_reg"].item(), float(g[f"{prefix}loss_box_reg"]), rtol=1e-5, atol=1e-6)
        (out["loss_cls"] + out["loss_box_reg"]).backward()
        np.testing.assert_allclose(box_cls.grad.numpy(), g[f"{prefix}grad_box_cls"], atol=1e-6, rtol=1e-4)
        np.testing.assert_allclose(box_delta.grad.numpy(), g[f"{prefix}grad_box_delta"], atol=1e-6, rtol=1e-4)


def test_conflicting_match_last_write_wins():
    g = load_golden("loss")
    _, _, cls, deltas, anchors, gts, labels = _official_loss_inputs(g, "")
    pred_boxes = BoxCoder(ctr_clamp=32).decode(deltas, anchors).detach()
    matches = UniformMatcher(4)(pred_boxes, anchors, gts)
    assigned, _ = YOLOFCriterion(7).assign(pred_boxes, anchors, gts, labels, matches)
    flat = int(g["conflict_flat_indices"][0])
    assert assigned.reshape(-1)[flat] == int(g["assigned_labels"][flat])
