"""Parity with the official YOLOF matcher and loss on tests/fixtures/golden."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

import models.criterion

from models.assigner import LabelAssigner
from models.box_coder import BoxCoder
from models.criterion import YOLOFCriterion
from models.detector import flatten_head_output
from models.matcher import IoUTopKMatcher, UniformMatcher
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


def test_uniform_matcher_costs_match_official(monkeypatch):
    """The L1 cost matrices, recorded from torch.cdist as the fixture recorded the official code."""
    g = load_golden("matcher")
    anchors = T(g["anchors"][0])
    pred = BoxCoder(ctr_clamp=32).decode(T(g["deltas"]), anchors)  # the matcher's input comes from the deltas
    np.testing.assert_allclose(pred.numpy(), g["pred_boxes"], atol=1e-4)
    calls = []
    real_cdist = torch.cdist

    def recording_cdist(a, b, p=2.0, **kw):
        out = real_cdist(a, b, p=p, **kw)
        calls.append(out.clone())
        return out

    monkeypatch.setattr(torch, "cdist", recording_cdist)
    gts = [T(g[f"gt_boxes_{i}"]) for i in range(2)]
    UniformMatcher(topk=4)(T(g["pred_boxes"]), anchors, gts)
    cost_pred, cost_anchor = calls  # (B, R, Gmax) each, in that order
    r, col = anchors.shape[0], 0
    for i, gt in enumerate(gts):  # golden: rows image-major, columns image 0's gts then image 1's
        n = gt.shape[0]
        np.testing.assert_allclose(cost_pred[i, :, :n].numpy(), g["cost_pred"][i * r:(i + 1) * r, col:col + n],
                                   atol=1e-3)
        np.testing.assert_allclose(cost_anchor[i, :, :n].numpy(), g["cost_anchor"][i * r:(i + 1) * r, col:col + n],
                                   atol=1e-3)
        col += n


def _tied_anchors(n_far=1000, n_tied=3000):
    """``n_far`` anchors far from the box, then ``n_tied`` identical anchors all at the same (smallest) cost:
    ties among far more anchors than topk's 64 * k small-input path handles in order."""
    far = torch.tensor([[400.0, 400.0, 432.0, 432.0]]).repeat(n_far, 1)
    near = torch.tensor([[0.0, 0.0, 32.0, 32.0]]).repeat(n_tied, 1)
    return torch.cat([far, near])


@pytest.mark.parametrize("matcher", [UniformMatcher(topk=4), IoUTopKMatcher(topk=4)], ids=["uniform", "iou_topk"])
def test_matchers_break_ties_by_lower_index(matcher):
    # 3000 anchors (indices 1000..3999) at exactly the same cost for the box: the 4 lowest indices win, in order,
    # on every device (torch.topk returns a device-dependent pick and order among ties: [1001, 1003, 1000, 1002]
    # on this CPU). Predictions: the same tie, shifted to indices 2000..3999, so pred and anchor picks differ.
    anchors = _tied_anchors()
    pred = _tied_anchors(n_far=2000, n_tied=2000)
    gt = [torch.tensor([[2.0, 3.0, 30.0, 33.0]])]
    m = matcher(pred[None], anchors, gt)[0]
    if isinstance(matcher, UniformMatcher):  # rank by rank: the pred choice, then the anchor choice
        assert m.src.tolist() == [2000, 1000, 2001, 1001, 2002, 1002, 2003, 1003]
    else:  # IoU with the anchors only
        assert m.src.tolist() == [1000, 1001, 1002, 1003]
    assert m.tgt.tolist() == [0] * len(m.src)


def _official_loss_inputs(g, prefix):
    box_cls = T(g[f"{prefix}box_cls"]).clone().requires_grad_(True)
    box_delta = T(g[f"{prefix}box_delta"]).clone().requires_grad_(True)
    cls = flatten_head_output(box_cls, 7)
    deltas = flatten_head_output(box_delta, 4)
    anchors = T(g[f"{prefix}anchors"])
    gts = [T(g[f"{prefix}gt_boxes_{i}"]) for i in range(2)]
    labels = [T(g[f"{prefix}gt_classes_{i}"]) for i in range(2)]
    return box_cls, box_delta, cls, deltas, anchors, gts, labels


def _assign(pred_boxes, anchors, gts, labels, matches):
    """The official labels (7 classes, default ignore thresholds) of given matches."""
    return LabelAssigner(None, num_classes=7).assign(pred_boxes, anchors, matches, gt_boxes=gts, gt_labels=labels)


def test_loss_matches_official_values_labels_and_gradients():
    g = load_golden("loss")
    coder = BoxCoder(ctr_clamp=32)
    criterion = YOLOFCriterion()
    for prefix in ("", "nc_"):
        box_cls, box_delta, cls, deltas, anchors, gts, labels = _official_loss_inputs(g, prefix)
        pred_boxes = coder.decode(deltas, anchors)
        np.testing.assert_allclose(pred_boxes.detach().numpy(), g[f"{prefix}predicted_boxes"], atol=1e-4)
        matches = UniformMatcher(4)(pred_boxes.detach(), anchors, gts)
        for i in range(2):
            np.testing.assert_array_equal(matches[i].src.numpy(), g[f"{prefix}src_idx_{i}"])
        assignment = _assign(pred_boxes.detach(), anchors, gts, labels, matches)
        assigned = assignment.labels
        np.testing.assert_array_equal(assigned.reshape(-1).numpy(), g[f"{prefix}assigned_labels"])
        out = criterion(cls, pred_boxes, assignment)
        assert float(out["num_foreground"]) == float(g[f"{prefix}num_foreground"])
        np.testing.assert_allclose(out["loss_cls"].item(), float(g[f"{prefix}loss_cls"]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["loss_box_reg"].item(), float(g[f"{prefix}loss_box_reg"]), rtol=1e-5, atol=1e-6)
        (out["loss_cls"] + out["loss_box_reg"]).backward()
        np.testing.assert_allclose(box_cls.grad.numpy(), g[f"{prefix}grad_box_cls"], atol=1e-6, rtol=1e-4)
        np.testing.assert_allclose(box_delta.grad.numpy(), g[f"{prefix}grad_box_delta"], atol=1e-6, rtol=1e-4)


def test_focal_sum_and_giou_pairs_match_official(monkeypatch):
    """The focal-loss sum before normalisation and the (pred, target) box pairs that reach the GIoU loss, in order
    (recorded from the GIoU call, as the fixture recorded the official code)."""
    g = load_golden("loss")
    pairs = []
    real_giou = torchvision.ops.generalized_box_iou_loss

    def recording_giou(boxes1, boxes2, **kw):
        pairs.append((boxes1.detach().clone(), boxes2.detach().clone()))
        return real_giou(boxes1, boxes2, **kw)

    monkeypatch.setattr(models.criterion, "generalized_box_iou_loss", recording_giou)
    for prefix in ("", "nc_"):
        pairs.clear()
        _, _, cls, deltas, anchors, gts, labels = _official_loss_inputs(g, prefix)
        np.testing.assert_allclose(cls.detach().numpy(), g[f"{prefix}pred_logits"], atol=0)
        np.testing.assert_allclose(deltas.detach().numpy(), g[f"{prefix}pred_anchor_deltas"], atol=0)
        pred_boxes = BoxCoder(ctr_clamp=32).decode(deltas, anchors)
        matches = UniformMatcher(4)(pred_boxes.detach(), anchors, gts)
        out = YOLOFCriterion()(cls, pred_boxes, _assign(pred_boxes.detach(), anchors, gts, labels, matches))
        focal_sum = out["loss_cls"].item() * max(1.0, float(out["num_foreground"]))
        np.testing.assert_allclose(focal_sum, float(g[f"{prefix}focal_loss_sum"]), rtol=1e-5, atol=1e-5)
        (pred_pairs, target_pairs), = pairs
        np.testing.assert_allclose(pred_pairs.numpy(), g[f"{prefix}giou_pred_boxes"], atol=1e-4)
        np.testing.assert_allclose(target_pairs.numpy(), g[f"{prefix}giou_target_boxes"], atol=1e-4)


def _conflicts(matches, keep, labels, r):
    """Flat anchor indices (image * R + anchor) whose kept pairs (anchor IoU >= 0.15) carry two different classes."""
    out = []
    for i, m in enumerate(matches):
        src, tgt = m.src[keep[i]], m.tgt[keep[i]]
        for a in torch.unique(src).tolist():
            if len(set(labels[i][tgt[src == a]].tolist())) > 1:
                out.append(i * r + a)
    return out


def test_conflicting_match_last_write_wins():
    g = load_golden("loss")
    _, _, cls, deltas, anchors, gts, labels = _official_loss_inputs(g, "")
    pred_boxes = BoxCoder(ctr_clamp=32).decode(deltas, anchors).detach()
    matches = UniformMatcher(4)(pred_boxes, anchors, gts)
    assigned = _assign(pred_boxes, anchors, gts, labels, matches).labels
    flat = int(g["conflict_flat_indices"][0])
    assert assigned.reshape(-1)[flat] == int(g["assigned_labels"][flat])
    # the conflicting anchors are the official ones: one in the main batch, none in the nc_ batch (there anchor
    # 120 of image 1 is matched to two classes too, but both pairs fall under the 0.15 anchor IoU and write -1)
    for prefix in ("", "nc_"):
        _, _, _, deltas, anchors, gts, labels = _official_loss_inputs(g, prefix)
        pred_boxes = BoxCoder(ctr_clamp=32).decode(deltas, anchors).detach()
        matches = UniformMatcher(4)(pred_boxes, anchors, gts)
        keep = _assign(pred_boxes, anchors, gts, labels, matches).keep
        assert _conflicts(matches, keep, labels, anchors.shape[0]) == g[f"{prefix}conflict_flat_indices"].tolist()
