"""models/matcher.py, assigner.py and criterion.py on hand-made cases: every matcher (the grid ones included), the
ignore thresholds, the image mask, the loss normalisation, ties."""
from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from config import ConfigError, load_config
from models import build_model
from models.anchors import AnchorGenerator
from models.assigner import LabelAssigner, anchor_valid_mask
from models.criterion import YOLOFCriterion, foreground_normalizer
from models.matcher import (MATCHERS, ATSSMatcher, GridMatcher, IoUTopKMatcher, Match, MaxIoUMatcher, UniformMatcher,
                            _smallest_k, build_matcher)
from tests.conftest import REPO

# One 2x2 map, stride 32, one 32-px anchor per cell: anchors centred at (0,0), (32,0), (0,32), (32,32).
ANCHORS = AnchorGenerator(32, (32,), (1.0,))(2, 2)


def test_anchor_grid_by_hand():
    assert ANCHORS.tolist() == [[-16, -16, 16, 16], [16, -16, 48, 16], [-16, 16, 16, 48], [16, 16, 48, 48]]


def test_uniform_matcher_pairs_by_hand():
    gt = torch.tensor([[20.0, 20.0, 44.0, 44.0]])  # centre (32, 32), 24x24: nearest anchor is 3
    # predictions: anchor 1's prediction moved onto the box, the others far away
    pred = ANCHORS.clone()
    pred[1] = torch.tensor([21.0, 21.0, 45.0, 45.0])
    m = UniformMatcher(topk=2)(pred[None], ANCHORS, [gt])[0]
    # L1 (cx,cy,w,h) costs to (32,32,24,24): preds [64+16, 32+16, 32+16, 0+8]=[80,48,48,8] with pred 1 -> |33-32|*2=2
    # pred costs: a0 80, a1 2, a2 48, a3 8 -> ranks 1, 3; anchor costs: a0 80, a1 48, a2 48, a3 16 -> ranks 3, 1
    assert m.src.tolist() == [1, 3, 3, 1]  # rank 0: pred choice, anchor choice; rank 1: same
    # (a1/a2 tie at 48 here; 4 anchors are too few to catch a plain topk: the tie rule is checked on 4000 anchors
    # in test_golden_train.py::test_matchers_break_ties_by_lower_index)
    assert m.tgt.tolist() == [0, 0, 0, 0]


def test_iou_topk_matcher_takes_highest_iou_anchors():
    gt = torch.tensor([[16.0, 16.0, 48.0, 48.0]])  # exactly anchor 3
    m = IoUTopKMatcher(topk=1)(ANCHORS[None], ANCHORS, [gt])[0]
    assert m.src.tolist() == [3] and m.tgt.tolist() == [0]


def test_max_iou_matcher_positive_negative_ignored():
    gts = [torch.tensor([[16.0, 16.0, 48.0, 48.0], [16.0, -16.0, 40.0, 16.0]])]
    # IoU(anchor1, gt1) = 24*32 / (32*32) = 0.75 -> positive for gt 1; anchor 3 = gt 0 -> positive
    m = MaxIoUMatcher(0.5, 0.4)(ANCHORS[None], ANCHORS, gts)[0]
    assert sorted(zip(m.src.tolist(), m.tgt.tolist())) == [(1, 1), (3, 0)]
    assert m.ignore.tolist() == [False, False, False, False]
    # a box with IoU 0.45 against anchor 3 only: in the ignore band, but kept as its best anchor
    gt = [torch.tensor([[16.0, 16.0, 48.0, 30.4]])]  # 32 x 14.4 inside anchor 3: IoU 0.45
    m = MaxIoUMatcher(0.5, 0.4, allow_low_quality=False)(ANCHORS[None], ANCHORS, gt)[0]
    assert m.src.tolist() == [] and m.ignore.tolist() == [False, False, False, True]
    m = MaxIoUMatcher(0.5, 0.4, allow_low_quality=True)(ANCHORS[None], ANCHORS, gt)[0]
    assert m.src.tolist() == [3] and m.ignore.tolist() == [False, False, False, False]


def _assigner(matcher=None, **kw):
    return LabelAssigner(matcher, num_classes=3, **kw)


def _labels(pred, gt, labels, match, valid=None, **kw):
    """(labels (B, R), keep per image) of hand-made matches, as the assigner builds them."""
    a = _assigner(**kw).assign(pred, ANCHORS, match, gt_boxes=gt, gt_labels=labels, anchor_valid=valid)
    return a.labels, a.keep


def _losses(logits, pred, gt, labels, match, *, normalization="batch", **kw):
    """The criterion's losses for hand-made matches (assigner options in ``kw``)."""
    a = _assigner(**kw).assign(pred, ANCHORS, match, gt_boxes=gt, gt_labels=labels)
    return YOLOFCriterion(normalization=normalization)(logits, pred, a)


def test_negative_ignore_uses_predicted_boxes():
    gt = [torch.tensor([[16.0, 16.0, 48.0, 48.0]])]
    labels = [torch.tensor([2])]
    pred = ANCHORS.clone()
    pred[0] = torch.tensor([17.0, 17.0, 48.0, 48.0])  # anchor 0 predicts the box: IoU 0.94 > 0.7
    match = [Match(src=torch.tensor([3]), tgt=torch.tensor([0]))]
    lab, keep = _labels(pred[None], gt, labels, match)
    assert lab[0].tolist() == [-1, 3, 3, 2]  # 0 ignored, 1 and 2 background, 3 positive class 2
    lab, _ = _labels(pred[None], gt, labels, match, ignore_thresholds=False)
    assert lab[0].tolist() == [3, 3, 3, 2]


def test_positive_ignore_uses_anchor_iou():
    gt = [torch.tensor([[40.0, 40.0, 48.0, 48.0]])]  # 8x8 box inside anchor 3: IoU 64/1024 = 0.0625 < 0.15
    labels = [torch.tensor([1])]
    match = [Match(src=torch.tensor([3]), tgt=torch.tensor([0]))]
    lab, keep = _labels(ANCHORS[None], gt, labels, match)
    assert lab[0].tolist() == [3, 3, 3, -1] and keep[0].tolist() == [False]
    lab, keep = _labels(ANCHORS[None], gt, labels, match, ignore_thresholds=False)
    assert lab[0].tolist() == [3, 3, 3, 1] and keep[0].tolist() == [True]


def test_image_mask_ignores_anchors_in_padding():
    # image of 40 x 20 (h, w) padded to 64 x 64: anchor centres x=32 >= 20 lie in padding
    valid = torch.tensor([[True, False, True, False]])
    gt = [torch.tensor([[16.0, 16.0, 48.0, 48.0]])]
    match = [Match(src=torch.tensor([3, 2]), tgt=torch.tensor([0, 0]))]
    lab, keep = _labels(ANCHORS[None], gt, [torch.tensor([0])], match, valid, ignore_thresholds=False)
    assert lab[0].tolist() == [3, -1, 0, -1] and keep[0].tolist() == [False, True]


def test_focal_and_giou_losses_by_hand():
    # one positive anchor predicting its box exactly (GIoU loss 0), logits 0 everywhere
    gt = [torch.tensor([[16.0, 16.0, 48.0, 48.0]])]
    match = [Match(src=torch.tensor([3]), tgt=torch.tensor([0]))]
    logits = torch.zeros(1, 4, 3)
    out = _losses(logits, ANCHORS[None].clone(), gt, [torch.tensor([1])], match, ignore_thresholds=False)
    # focal at p=0.5: positive entry 0.25*ln2*0.25, each of the 11 negative entries 0.75*ln2*0.25; 1 foreground
    expected = 0.25 * math.log(2) * 0.25 + 11 * 0.75 * math.log(2) * 0.25
    assert math.isclose(out["loss_cls"].item(), expected, rel_tol=1e-6)
    assert out["loss_box_reg"].item() < 1e-6
    assert out["num_foreground"].item() == 1


def test_per_image_normalisation_averages_images():
    gt = [torch.tensor([[16.0, 16.0, 48.0, 48.0]]), torch.zeros(0, 4)]
    labels = [torch.tensor([1]), torch.zeros(0, dtype=torch.long)]
    match = [Match(src=torch.tensor([3, 1]), tgt=torch.tensor([0, 0])),
             Match(src=torch.zeros(0, dtype=torch.long), tgt=torch.zeros(0, dtype=torch.long))]
    logits = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(0))
    pred = ANCHORS[None].repeat(2, 1, 1)
    target = torch.zeros(2, 4, 3)
    target[0, 3, 1] = target[0, 1, 1] = 1
    focal = sigmoid_focal_loss(logits, target, reduction="none").sum(dim=(1, 2))
    out_b = _losses(logits, pred, gt, labels, match, normalization="batch", ignore_thresholds=False)
    out_i = _losses(logits, pred, gt, labels, match, normalization="per_image", ignore_thresholds=False)
    assert math.isclose(out_b["loss_cls"].item(), focal.sum().item() / 2, rel_tol=1e-6)
    # image 0: 2 foreground, image 1: none (normaliser 1)
    assert math.isclose(out_i["loss_cls"].item(),
                        (focal[0].item() / 2 + focal[1].item() / 1) / 2, rel_tol=1e-6)


def test_empty_ground_truth_is_all_background():
    logits = torch.full((1, 4, 3), -4.0)
    out = _losses(logits, ANCHORS[None].clone(), [torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)],
                  [Match(src=torch.zeros(0, dtype=torch.long), tgt=torch.zeros(0, dtype=torch.long))])
    assert out["num_foreground"].item() == 0 and out["loss_box_reg"].item() == 0
    assert torch.isfinite(out["loss_cls"]) and out["loss_cls"].item() > 0


@pytest.fixture(scope="module")
def padded_coco_batch(coco_tiny):
    """A portrait and a landscape COCO image (test pipeline, short side 160) padded into one batch, each with an
    extra box on its padded edge: the model (image_mask on), images, targets, anchors and image sizes."""
    from config import load_config
    from data.coco import COCODetection
    from data.transforms import build_transforms
    from models import build_model
    from tests.conftest import COCO_JSON, COCO_SPLIT, REPO

    cfg = load_config(REPO / "config/small_cpu.yaml", {"model.num_classes": 80, "model.loss.image_mask": True,
                                                         "data.dataset": "coco"})
    ds = COCODetection(coco_tiny / COCO_SPLIT, COCO_JSON, build_transforms(False, 160, 256), cfg.model.input_format)
    batch = [ds[ds.ids.index(i)] for i in (333956, 454661)]  # 428x640 -> 160x239, 640x427 -> 240x160
    images, targets = [b[0] for b in batch], [b[1] for b in batch]
    # plus a box at the right edge of image 0 (w 160) and one at the bottom of image 1 (h 160): their nearest
    # anchors sit on the cells at 160 px, in the padding
    for t, box in zip(targets, ([146.0, 40.0, 160.0, 60.0], [40.0, 146.0, 60.0, 160.0])):
        t["boxes"] = torch.cat([t["boxes"], torch.tensor([box])])
        t["labels"] = torch.cat([t["labels"], torch.tensor([0])])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    padded, sizes = model.preprocess(images)
    assert sizes == [(239, 160), (160, 240)] and tuple(padded.shape[-2:]) == (239, 240)
    _, _, anchors = model.forward_features(padded)
    return model, images, targets, anchors, sizes


def test_anchor_valid_mask_on_a_real_padded_batch(padded_coco_batch):
    """The valid mask is the anchors whose cell lies inside each image of the padded batch."""
    model, _, _, anchors, sizes = padded_coco_batch
    stride, a = model.anchor_generator.stride, model.anchor_generator.num_anchors
    w = -(-240 // stride)  # the map of the padded 239 x 240 batch: ceil(240 / 32) = 8 columns, and 8 rows
    h = anchors.shape[0] // a // w
    assert (h, w) == (8, 8) and model.anchor_generator.offset == 0.0
    # by hand: row (y * W + x) * A + a is cell (x, y), centred at (x * stride, y * stride); inside iff < (w_i, h_i)
    row = torch.arange(anchors.shape[0])
    x, y = row // a % w, row // a // w
    valid = anchor_valid_mask(anchors, sizes)
    for i, (hi, wi) in enumerate(sizes):
        assert torch.equal(valid[i], (x * stride < wi) & (y * stride < hi)), i
    assert valid[0].sum() == 5 * 8 * a and valid[1].sum() == 8 * 5 * a  # cells x < 5 (160 / 32) resp. y < 5


def test_image_mask_ignores_the_padding_on_a_real_padded_batch(padded_coco_batch):
    """With image_mask the criterion ignores the anchors in the padding and drops matches there from the box
    loss; without it (the official way) they are background."""
    model, images, targets, anchors, sizes = padded_coco_batch
    valid = anchor_valid_mask(anchors, sizes)
    recorded = []
    real_assign = model.assigner.assign

    def recording_assign(*args, **kwargs):
        out = real_assign(*args, **kwargs)
        recorded.append((args, (out.labels, out.keep)))
        return out

    model.assigner.assign = recording_assign
    try:
        for image_mask in (True, False):
            model.assigner.image_mask = image_mask
            losses = model(images, targets)
            assert torch.isfinite(losses["loss_cls"]) and torch.isfinite(losses["loss_box_reg"])
    finally:
        model.assigner.assign, model.assigner.image_mask = real_assign, True
    (args_on, (labels_on, keep_on)), (_, (labels_off, _)) = recorded
    k = model.num_classes
    for i in range(2):
        pad = ~valid[i]
        assert (labels_on[i][pad] == -1).all()  # every anchor in the padding is ignored
        assert (labels_off[i][pad] == k).float().mean() > 0.9  # without the mask: background (the official way)
        inside = labels_on[i][valid[i]]
        assert ((inside >= 0) & (inside < k)).any() and (inside == k).any()
        matches = args_on[2]  # assign(pred_boxes, anchors, matches, ...)
        in_pad = pad[matches[i].src]
        assert in_pad.any(), i  # the matcher picks anchors in the padding (L1 top-k, no threshold) for the edge box ...
        assert not keep_on[i][in_pad].any()  # ... and image_mask drops those pairs from the box loss


def test_foreground_normalizer_by_hand():
    # the per-rank average foreground count, at least 1; a tensor stays a float32 tensor, a number gives a float
    out = foreground_normalizer(torch.tensor(6.0), 4)
    assert out.dtype == torch.float32 and out.item() == 1.5
    assert foreground_normalizer(torch.tensor(0.0), 1).item() == 1.0
    assert foreground_normalizer(6.0, 4) == 1.5 and foreground_normalizer(2, 4) == 1.0
    assert isinstance(foreground_normalizer(2, 4), float)


def test_label_assigner_matches_masks_and_labels():
    """The assigner's one call = the matcher + the ignore thresholds + the image mask. Uniform top-1 on the 2x2
    grid: the box centred at (32, 32) takes anchor 3 twice (its prediction, then the anchor itself)."""
    gt = {"boxes": torch.tensor([[16.0, 16.0, 48.0, 48.0]]), "labels": torch.tensor([0])}
    a = _assigner(UniformMatcher(topk=1))(ANCHORS[None], ANCHORS, [gt])
    assert a.matches[0].src.tolist() == [3, 3] and a.keep[0].tolist() == [True, True]
    assert a.labels[0].tolist() == [3, 3, 3, 0]
    img, src, boxes = a.kept_pairs()
    assert img.tolist() == [0, 0] and src.tolist() == [3, 3] and boxes.tolist() == [[16.0, 16.0, 48.0, 48.0]] * 2
    # image of 40 x 20 (h, w): anchors 1 and 3 (centre x = 32) lie in the padding and lose their pairs
    a = _assigner(UniformMatcher(topk=1), image_mask=True)(ANCHORS[None], ANCHORS, [gt], image_sizes=[(40, 20)])
    assert a.labels[0].tolist() == [3, -1, 3, -1] and a.keep[0].tolist() == [False, False]
    assert a.kept_pairs()[1].numel() == 0


def test_every_matcher_name_builds_and_keeps_the_match_contract():
    gts = [torch.tensor([[16.0, 16.0, 48.0, 48.0], [0.0, 0.0, 20.0, 20.0]]), torch.zeros(0, 4)]
    for name in MATCHERS:
        options = {"topk": 2} if name in ("uniform", "iou_topk") else {}  # each matcher's own options
        matches = build_matcher(name, stride=32, num_anchors=1, **options)(ANCHORS[None].repeat(2, 1, 1), ANCHORS, gts)
        assert len(matches) == 2, name
        for m, g in zip(matches, gts):
            assert m.src.shape == m.tgt.shape and (m.src.numel() > 0) == (len(g) > 0), name
            assert m.tgt.numel() == 0 or int(m.tgt.max()) < len(g), name
            assert m.ignore is None or m.ignore.shape == (4,), name


def test_top_k_matching_equals_a_stable_sort_on_ties():
    """``_smallest_k`` (top-k of 2k candidates) gives exactly a stable sort's first k, ties included."""
    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        r, k = int(torch.randint(1, 80, (1,), generator=g)), int(torch.randint(1, 9, (1,), generator=g))
        cost = torch.randint(0, 6, (2, r, 3), generator=g).float() if trial % 2 else torch.rand(2, r, 3, generator=g)
        cost[:, r // 2] = cost[:, 0]  # a tie at every rank
        expected = torch.sort(cost, dim=1, stable=True).indices[:, :min(k, r)]
        assert torch.equal(_smallest_k(cost, k), expected), (trial, r, k)
    cost = torch.tensor([[[3.0], [1.0], [2.0], [1.0], [5.0], [1.0], [0.5]]])  # by hand: 0.5 (6), then 1.0 at 1, 3
    assert _smallest_k(cost, 3).flatten().tolist() == [6, 1, 3]


# ----------------------------------------------------------------------------- grid matchers
# A 3x3 map, stride 32, offset 0, two anchors per cell (32 and 64 px): anchor centres at x, y in {0, 32, 64};
# anchor index = (y_cell * 3 + x_cell) * 2 + a, a = 0 for the 32-px anchor and 1 for the 64-px one.
ANCHORS_3X3 = AnchorGenerator(32, (32, 64), (1.0,))(3, 3)


def _grid(mode, choice="best", anchors=ANCHORS_3X3, stride=32, a=2, offset=0.0):
    def match(*boxes):
        gt = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        m = GridMatcher(mode, stride=stride, num_anchors=a, offset=offset, anchor_choice=choice)(
            anchors[None], anchors, [gt])[0]
        return list(zip(m.tgt.tolist(), m.src.tolist()))
    return match


def test_grid_center_takes_the_cell_of_the_nearest_anchor_centre():
    center = _grid("center")
    # centre (40, 20): x cell floor(40/32 + 1/2) = 1, y cell floor(20/32 + 1/2) = 1 -> cell 4; 30x30 fits 32 px best
    assert center([25, 5, 55, 35]) == [(0, 8)]
    assert _grid("center", "all")([25, 5, 55, 35]) == [(0, 8), (0, 9)]
    # centre (47.9, 15.9) is nearer the anchor at (32, 0) than any other: cell (1, 0); a 60x60 box fits 64 px best
    assert center([17.9, -14.1, 77.9, 45.9]) == [(0, 3)]
    # exactly half-way, centre (48, 16): the right / lower cell (2, 1)
    assert center([38, 6, 58, 26]) == [(0, 10)]
    # a centre beyond the map is clamped to the last cell (2, 2); two boxes come out box by box
    assert center([90, 90, 110, 110], [0, 0, 10, 10]) == [(0, 16), (1, 0)]


def test_grid_center_with_offset_half_is_yolo_floor():
    anchors = AnchorGenerator(32, (32,), (1.0,), offset=0.5)(2, 2)  # centres 16, 48: cell x covers [32x, 32x + 32)
    center = _grid("center", anchors=anchors, a=1, offset=0.5)
    assert center([21.9, 30, 41.9, 50]) == [(0, 2)]  # centre (31.9, 40): floor(31.9/32) = 0, floor(40/32) = 1
    assert center([22, 30, 42, 50]) == [(0, 3)]  # centre (32, 40): cell (1, 1)


def test_grid_neighbors_takes_the_3x3_cells_cut_at_the_border():
    # centre (5, 5) -> cell (0, 0); neighbours inside the map: (0,0) (1,0) (0,1) (1,1); 60x60 -> the 64-px anchor
    assert _grid("neighbors")([-25, -25, 35, 35]) == [(0, 1), (0, 3), (0, 7), (0, 9)]
    # centre (32, 32) -> cell (1, 1): all nine cells, 32-px anchor
    assert [s for _, s in _grid("neighbors")([20, 20, 44, 44])] == [0, 2, 4, 6, 8, 10, 12, 14, 16]


def test_grid_inside_takes_cells_whose_anchor_centre_is_in_the_box():
    inside = _grid("inside", "all")
    # x in (10, 70) holds centres 32, 64; y in (-5, 40) holds 0, 32 -> cells (1,0) (2,0) (1,1) (2,1) = 1, 2, 4, 5
    assert [s for _, s in inside([10, -5, 70, 40])] == [2, 3, 4, 5, 8, 9, 10, 11]
    # best shape of a 60x45 box: IoU 2700/4096 = 0.66 with 64 px, 1024/2700 = 0.38 with 32 px
    assert [s for _, s in _grid("inside")([10, -5, 70, 40])] == [3, 5, 9, 11]
    # strictly inside: a box edge through an anchor centre does not take it
    # no centre inside -> falls back to centre cell (1,1)
    assert [s for _, s in _grid("inside")([32, 32, 60, 60])] == [8]
    # an 8x8 box holds no anchor centre: its centre cell (1, 1)
    assert _grid("inside")([36, 36, 44, 44]) == [(0, 8)]


def test_grid_matcher_batch_with_an_empty_image_and_builder():
    m = build_matcher("grid_center", stride=32, num_anchors=2)
    assert isinstance(m, GridMatcher) and m.mode == "center" and m.anchor_choice == "best"
    out = m(ANCHORS_3X3[None].repeat(2, 1, 1), ANCHORS_3X3, [torch.tensor([[25.0, 5, 55, 35]]), torch.zeros(0, 4)])
    assert out[0].src.tolist() == [8] and out[0].tgt.tolist() == [0]
    assert out[1].src.numel() == 0 and out[1].tgt.numel() == 0 and out[1].ignore is None


def test_grid_matcher_config_builds_a_model_that_trains():
    from models import build_model

    cfg = load_config(REPO / "config/small_cpu.yaml", {
        "model.matcher.name": "grid_neighbors", "model.backbone.width_mult": 0.25, "model.encoder.channels": 32,
        "model.encoder.mid_channels": 8, "model.anchors.custom_wh": [[20, 20], [40, 30]]})
    model = build_model(cfg).train()
    assert isinstance(model.assigner.matcher, GridMatcher) and model.assigner.matcher.num_anchors == 2
    out = model([torch.rand(3, 64, 96) * 255], [{"boxes": torch.tensor([[10.0, 10, 40, 50]]),
                                                 "labels": torch.tensor([1])}])
    assert torch.isfinite(out["loss_cls"]) and out["num_foreground"] > 0


# ----------------------------------------------------------------------------- matchers
# ATSS and top-1 on ANCHORS_3X3 (above)

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
    preds = ANCHORS_3X3[None].repeat(len(gts), 1, 1)
    return [(m.src.tolist(), m.tgt.tolist()) for m in matcher(preds, ANCHORS_3X3, gts)]


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
    preds = ANCHORS_3X3[None].clone()
    preds[0, 0] = torch.tensor(box)  # anchor 0 predicts the box exactly: uniform matching's prediction half takes it
    gt = [torch.tensor([box])]
    assert top1(preds, ANCHORS_3X3, gt)[0].src.tolist() == [8]
    assert UniformMatcher(1)(preds, ANCHORS_3X3, gt)[0].src.tolist() == [0, 8]
    # two boxes, one image: one pair each, box order
    # 2nd box (64, 32, 56, 56): L1 to anchor 11 (64, 32, 64, 64) 8 + 8 = 16, to anchor 10 (64, 32, 32, 32) 24 + 24 = 48
    m = top1(ANCHORS_3X3[None], ANCHORS_3X3, [torch.tensor([box, [36.0, 4.0, 92.0, 60.0]])])[0]
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
