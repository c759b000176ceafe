"""Matchers: which anchors are paired with which ground-truth box.

A matcher is the first part of label assignment (:class:`models.assigner.LabelAssigner`
adds the ignore thresholds and the image mask and builds the labels). Every matcher is called under
``torch.no_grad()`` as::

    matches = matcher(pred_boxes, anchors, gt_boxes)

with ``pred_boxes`` (B, R, 4) decoded predictions, ``anchors`` (R, 4) and
``gt_boxes`` a list of B tensors (G_i, 4), all xyxy pixels. It returns one
``Match`` per image: ``src`` (M,) anchor indices, ``tgt`` (M,) indices into that
image's boxes (pairs may repeat), and ``ignore`` (R,) bool or None: anchors that
are neither positive nor negative (max-IoU's band between its thresholds).

* ``UniformMatcher`` (official YOLOF): for every box, the k anchors whose
  *predicted* box is closest in L1 over (cx, cy, w, h), plus the k closest
  *anchors*; 2k pairs per box, no threshold. ``top1`` is this matcher with
  k = 1 and without the predicted-box half: each box's single nearest anchor.
* ``ATSSMatcher`` (Zhang et al., CVPR 2020, on YOLOF's single level): the k
  anchors nearest each box by centre distance are its candidates; those whose
  IoU with it reaches mean + std of the candidates' IoUs and whose centre lies
  inside it are positive.
* ``IoUTopKMatcher`` (an ablation of the uniform matcher): for every box, the k anchors of
  highest IoU with it.
* ``MaxIoUMatcher`` (RetinaNet): each anchor goes to its best box when IoU >=
  0.5, is negative below 0.4 and ignored in between; each box also keeps its
  best anchor (low-quality matches), as detectron2's RetinaNet does.
* ``GridMatcher`` (single-level YOLO detectors, for the ablation): a box goes
  to the anchors of the grid cell holding its centre (``grid_center``, YOLOv1-3),
  of that cell and its 3x3 neighbourhood (``grid_neighbors``), or of every cell
  whose anchor centre lies inside the box (``grid_inside``, FCOS-like); within
  a chosen cell, the anchor whose shape fits the box best or all of them.

Ties are broken deterministically in favour of the lower anchor index (stable
sort), so CPU and CUDA assign the same anchors.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torchvision.ops import box_convert, box_iou

from config.schema import ATSSMatcherConfig, GridMatcherConfig, MaxIoUMatcherConfig, TopKMatcherConfig


@dataclass
class Match:
    src: torch.Tensor  # (M,) anchor index
    tgt: torch.Tensor  # (M,) box index
    ignore: Optional[torch.Tensor] = None  # (R,) bool


def _pad_boxes(gt_boxes: Sequence[torch.Tensor], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, Gmax, 4) padded boxes and (B, Gmax) validity."""
    gmax = max(1, max(int(g.shape[0]) for g in gt_boxes))
    padded = like.new_zeros((len(gt_boxes), gmax, 4))
    valid = torch.zeros((len(gt_boxes), gmax), dtype=torch.bool, device=like.device)
    for i, g in enumerate(gt_boxes):
        padded[i, : g.shape[0]] = g
        valid[i, : g.shape[0]] = True
    return padded, valid


def _smallest_k(cost: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, k, G) of the k smallest entries along dim 1 of cost (B, R, G), lowest index first on ties.

    The result of a stable sort of all R entries, from a ``topk`` of ``2k`` candidates: those hold every entry
    tied with the k-th smallest unless 2k entries tie with it, in which case (rare: a degenerate cost) the whole
    column is sorted. ``topk`` alone leaves the order of ties to the device; a full sort of a DC5 batch
    (B=8, R=5*50*84, G up to ~100) makes about 0.5 GB of temporaries.
    """
    r = cost.shape[1]
    k = min(k, r)
    m = min(2 * k, r)
    if m == r:
        return torch.sort(cost, dim=1, stable=True).indices[:, :k, :]
    values, cand = torch.topk(cost, m, dim=1, largest=False, sorted=True)  # (B, m, G)
    if not bool((values[:, m - 1] > values[:, k - 1]).all()):  # a tie reaches past the candidates
        return torch.sort(cost, dim=1, stable=True).indices[:, :k, :]
    cand, order = torch.sort(cand, dim=1)  # candidates by anchor index...
    order = torch.sort(torch.gather(values, 1, order), dim=1, stable=True).indices  # ...then by cost, stably
    return torch.gather(cand, 1, order)[:, :k, :]


def _pairs_from_topk(idx_lists: Sequence[torch.Tensor], num_gt: Sequence[int]) -> list[Match]:
    """Turn per-image (k, G) index tensors into the official pair order.

    The official code concatenates, rank by rank, the pred-box choice then the
    anchor choice: ``src = [idx[0, :], idx1[0, :], idx[1, :], idx1[1, :], ...]``
    with ``tgt = [0..G-1, 0..G-1, ...]``.
    """
    matches = []
    for b, g in enumerate(num_gt):
        parts = [idx[b, :, :g] for idx in idx_lists]  # each (k, g)
        src = torch.stack(parts, dim=1).reshape(-1)  # rank-major, then source, then gt
        tgt = torch.arange(g, device=src.device).repeat(parts[0].shape[0] * len(parts))
        matches.append(Match(src=src, tgt=tgt))
    return matches


class UniformMatcher:
    """Uniform matching: for every box, the ``topk`` anchors nearest it in L1 over (cx, cy, w, h) by their
    predicted box, then the ``topk`` nearest by the anchor itself (``by_prediction=False``: the anchors only).

    ``top1`` ("Top1" of the paper's comparison of matchers, read as "only the nearest anchor") is
    ``UniformMatcher(1, by_prediction=False)``: the one anchor nearest each box, a fixed assignment that does not
    look at the predictions. It is not uniform matching with k = 1, which also takes the anchor of the nearest
    predicted box (two pairs per box, or the same anchor twice). "Nearest" is uniform matching's own metric, so
    that the two rows differ only in k and in the predicted-box half.
    """

    def __init__(self, topk: int = 4, by_prediction: bool = True):
        self.topk, self.by_prediction = topk, by_prediction

    @torch.no_grad()
    def __call__(self, pred_boxes: torch.Tensor, anchors: torch.Tensor,
                 gt_boxes: Sequence[torch.Tensor]) -> list[Match]:
        b = pred_boxes.shape[0]
        gts, _ = _pad_boxes(gt_boxes, pred_boxes)
        gts_c = box_convert(gts, "xyxy", "cxcywh")
        anchor_c = box_convert(anchors, "xyxy", "cxcywh").unsqueeze(0).expand(b, -1, -1)
        idx = []  # the official pair order: the predicted-box choice, then the anchor choice
        if self.by_prediction:
            pred_c = box_convert(pred_boxes, "xyxy", "cxcywh")
            idx.append(_smallest_k(torch.cdist(pred_c, gts_c, p=1), self.topk))  # cost (B, R, Gmax)
        idx.append(_smallest_k(torch.cdist(anchor_c.contiguous(), gts_c, p=1), self.topk))
        return _pairs_from_topk(idx, [int(g.shape[0]) for g in gt_boxes])


class IoUTopKMatcher:
    def __init__(self, topk: int = 4):
        self.topk = topk

    @torch.no_grad()
    def __call__(self, pred_boxes: torch.Tensor, anchors: torch.Tensor,
                 gt_boxes: Sequence[torch.Tensor]) -> list[Match]:
        gts, _ = _pad_boxes(gt_boxes, pred_boxes)
        b, gmax = gts.shape[:2]
        iou = box_iou(anchors, gts.reshape(-1, 4)).view(anchors.shape[0], b, gmax).permute(1, 0, 2)  # (B, R, Gmax)
        idx = _smallest_k(-iou, self.topk)
        return _pairs_from_topk([idx], [int(g.shape[0]) for g in gt_boxes])


class MaxIoUMatcher:
    def __init__(self, pos_thresh: float = 0.5, neg_thresh: float = 0.4, allow_low_quality: bool = True):
        self.pos_thresh, self.neg_thresh, self.allow_low_quality = pos_thresh, neg_thresh, allow_low_quality

    @torch.no_grad()
    def __call__(self, pred_boxes: torch.Tensor, anchors: torch.Tensor,
                 gt_boxes: Sequence[torch.Tensor]) -> list[Match]:
        gts, valid = _pad_boxes(gt_boxes, pred_boxes)
        b, gmax = gts.shape[:2]
        r = anchors.shape[0]
        iou = box_iou(anchors, gts.reshape(-1, 4)).view(r, b, gmax).permute(1, 0, 2)  # (B, R, Gmax)
        iou = iou.masked_fill(~valid[:, None, :], -1.0)
        best_iou, best_gt = iou.max(dim=2)  # (B, R)
        positive = best_iou >= self.pos_thresh
        ignore = (best_iou >= self.neg_thresh) & ~positive
        if self.allow_low_quality:
            # every box keeps the anchors of its highest IoU (ties included), as detectron2
            gt_best = iou.max(dim=1, keepdim=True).values  # (B, 1, Gmax)
            low_quality = ((iou == gt_best) & valid[:, None, :] & (gt_best > 0)).any(dim=2)
            positive = positive | low_quality
            ignore = ignore & ~positive
        matches = []
        for i in range(b):
            src = positive[i].nonzero().squeeze(1)
            matches.append(Match(src=src, tgt=best_gt[i, src], ignore=ignore[i]))
        return matches


class ATSSMatcher:
    """Adaptive training sample selection (Zhang et al., CVPR 2020) on YOLOF's single level.

    For every box, its candidates are the ``topk`` anchors whose centres are nearest the box's centre (Euclidean;
    the A anchors of a cell share its centre, and ties go to the lower anchor index, so the count is of anchors,
    not cells, as in the official ATSS code; k = 9 is ATSS's default). Its threshold is the mean plus the standard
    deviation (the sample std, torch's default, as the official code's ``std(0)``) of the candidates' IoUs with it.
    A candidate is positive when its IoU >= the threshold and its centre lies inside the box (more than 0.01 px
    from every side, as the official code). An anchor positive for several boxes goes to the one of highest IoU
    (the lower box index on ties). A box may get no positive (ATSS does not force one, e.g. for a box that holds
    no candidate's centre). ``ignore`` is None: every other anchor is negative (before the assigner's ignore
    thresholds).
    """

    def __init__(self, topk: int = 9):
        if topk < 2:
            raise ValueError(f"ATSS needs at least 2 candidates per box (a std of one IoU is undefined), got {topk}")
        self.topk = topk

    @torch.no_grad()
    def __call__(self, pred_boxes: torch.Tensor, anchors: torch.Tensor,
                 gt_boxes: Sequence[torch.Tensor]) -> list[Match]:
        gts, valid = _pad_boxes(gt_boxes, anchors)  # (B, G, 4), (B, G)
        b, gmax = gts.shape[:2]
        r = anchors.shape[0]
        anchor_ctr = (anchors[:, :2] + anchors[:, 2:]) / 2  # (R, 2)
        box_ctr = (gts[..., :2] + gts[..., 2:]) / 2  # (B, G, 2)
        # squared distances, exact (cdist's matrix-product form would round ties between cells differently)
        dist = (anchor_ctr[None, :, None, :] - box_ctr[:, None, :, :]).square().sum(dim=-1)  # (B, R, G)
        candidates = _smallest_k(dist, self.topk)  # (B, k, G)
        iou = box_iou(anchors, gts.reshape(-1, 4)).view(r, b, gmax).permute(1, 0, 2)  # (B, R, G)
        candidate_iou = iou.gather(1, candidates)  # (B, k, G)
        thresh = candidate_iou.mean(dim=1) + candidate_iou.std(dim=1)  # (B, G)
        is_candidate = torch.zeros_like(iou, dtype=torch.bool).scatter_(1, candidates, True)
        to_sides = torch.cat([anchor_ctr[None, :, None, :] - gts[:, None, :, :2],
                              gts[:, None, :, 2:] - anchor_ctr[None, :, None, :]], dim=-1)  # (B, R, G, 4) l, t, r, b
        inside = to_sides.amin(dim=-1) > 0.01
        positive = is_candidate & (iou >= thresh[:, None, :]) & inside & valid[:, None, :]  # (B, R, G)
        best_gt = iou.masked_fill(~positive, -1.0).argmax(dim=2)  # (B, R): the first maximum
        is_positive = positive.any(dim=2)
        matches = []
        for i in range(b):
            src = is_positive[i].nonzero().squeeze(1)
            matches.append(Match(src=src, tgt=best_gt[i, src]))
        return matches


class GridMatcher:
    """Grid assignment of single-level YOLO-style detectors, on YOLOF's anchors.

    Cells: the anchors of cell ``(x, y)`` are centred at ``((x + offset) * stride,
    (y + offset) * stride)`` (official YOLOF: offset 0, the cell's top-left
    corner). Cell ``(x, y)`` owns the points nearest to its anchor centre, i.e.
    ``[(x + offset - 1/2) * stride, (x + offset + 1/2) * stride)`` along x, so a box
    centre ``c`` lies in cell ``floor(c / stride - offset + 1/2)`` (clamped to the
    map): the chosen anchors are those whose centres are nearest the box centre,
    whatever the offset (with offset 0.5 this is YOLO's ``floor(c / stride)``).
    A centre exactly half-way between two anchor centres goes to the right/lower cell.

    Modes:

    * ``center``: the cell holding the box centre (YOLOv1-v3);
    * ``neighbors``: that cell and its 3x3 neighbourhood (up to 9 cells; cut at the
      border of the map), a symmetric version of YOLOv5's extra neighbour cells;
    * ``inside``: every cell whose anchor centre lies strictly inside the box
      (FCOS' centre sampling without a radius); a box that holds no anchor centre
      (smaller than a stride) falls back to its ``center`` cell so that every box
      is learned.

    Anchors of a chosen cell (``anchor_choice``): ``best`` takes the one whose
    (w, h) has the highest IoU with the box's (w, h) when both are centred at the
    same point (YOLOv2/v3's rule; the lowest anchor index on ties), ``all`` takes
    all ``A`` of them.

    Pairs come out box by box (box 0's anchors in increasing index, then box 1's...),
    so an anchor chosen by two boxes takes the later box's class in the criterion
    (last write wins). ``ignore`` is None: every other anchor is negative (before
    the criterion's ignore thresholds).
    """

    modes = ("center", "neighbors", "inside")

    def __init__(self, mode: str, *, stride: float, num_anchors: int, offset: float = 0.0, anchor_choice: str = "best"):
        if mode not in self.modes:
            raise ValueError(f"unknown grid mode {mode!r}; expected one of {self.modes}")
        self.mode, self.stride, self.num_anchors = mode, float(stride), int(num_anchors)
        self.offset, self.anchor_choice = float(offset), anchor_choice

    @torch.no_grad()
    def __call__(self, pred_boxes: torch.Tensor, anchors: torch.Tensor,
                 gt_boxes: Sequence[torch.Tensor]) -> list[Match]:
        gts, valid = _pad_boxes(gt_boxes, anchors)  # (B, G, 4), (B, G)
        r, a = anchors.shape[0], self.num_anchors
        if r % a != 0:
            raise ValueError(f"{r} anchors is not a multiple of {a} anchors per cell")
        anchor_ctr = (anchors[:, :2] + anchors[:, 2:]) / 2  # (R, 2) x, y
        anchor_cell = torch.round(anchor_ctr / self.stride - self.offset).long()  # (R, 2): the cell (x, y)
        map_w, map_h = int(anchor_cell[:, 0].max()) + 1, int(anchor_cell[:, 1].max()) + 1
        box_ctr = (gts[..., :2] + gts[..., 2:]) / 2  # (B, G, 2)
        box_cell = torch.floor(box_ctr / self.stride - self.offset + 0.5).long()
        box_cell[..., 0].clamp_(0, map_w - 1)
        box_cell[..., 1].clamp_(0, map_h - 1)
        dx = (anchor_cell[None, None, :, 0] - box_cell[..., 0:1]).abs()  # (B, G, R)
        dy = (anchor_cell[None, None, :, 1] - box_cell[..., 1:2]).abs()
        centre = (dx == 0) & (dy == 0)
        if self.mode == "center":
            chosen = centre
        elif self.mode == "neighbors":
            chosen = (dx <= 1) & (dy <= 1)
        else:
            ax, ay = anchor_ctr[None, None, :, 0], anchor_ctr[None, None, :, 1]
            chosen = ((ax > gts[..., 0:1]) & (ax < gts[..., 2:3]) & (ay > gts[..., 1:2]) & (ay < gts[..., 3:4]))
            chosen = chosen | (centre & ~chosen.any(dim=2, keepdim=True))
        if self.anchor_choice == "best":
            cell_wh = anchors[:a, 2:] - anchors[:a, :2]  # (A, 2): every cell has the same A shapes
            box_wh = gts[..., 2:] - gts[..., :2]  # (B, G, 2)
            inter = torch.minimum(box_wh[..., None, :], cell_wh).prod(dim=-1)  # (B, G, A), both centred at 0
            union = box_wh.prod(dim=-1, keepdim=True) + cell_wh.prod(dim=-1) - inter
            best = (inter / union.clamp(min=1e-12)).argmax(dim=-1)  # (B, G), first maximum on ties
            anchor_index = torch.arange(r, device=anchors.device) % a
            chosen = chosen & (anchor_index[None, None, :] == best[..., None])
        chosen = chosen & valid[..., None]
        matches = []
        for i, g in enumerate(gt_boxes):
            tgt, src = chosen[i, : g.shape[0]].nonzero(as_tuple=True)  # box-major, anchors increasing
            matches.append(Match(src=src, tgt=tgt))
        return matches


@dataclass(frozen=True)
class AnchorGrid:
    """What the grid matchers need of the anchors: backbone stride, anchor offset in cells, anchors per cell."""

    stride: float = 32
    offset: float = 0.0
    num_anchors: int = 1


@dataclass(frozen=True)
class MatcherSpec:
    """One model.matcher.name: its builder ``build(section, grid)`` and its own config section's type (None: no
    options; the section is ``model.matcher.<name>`` in config/schema.py, ``model.matcher.grid`` for the grid_*)."""

    build: Callable
    section: Optional[type] = None


def _grid(mode: str) -> MatcherSpec:
    return MatcherSpec(lambda s, g: GridMatcher(mode, stride=g.stride, num_anchors=g.num_anchors, offset=g.offset,
                                                anchor_choice=s.anchors), GridMatcherConfig)


# Every model.matcher.name. A builder receives its own section
# (MatcherConfig.section()) and the anchor grid, nothing else.
MATCHERS: dict[str, MatcherSpec] = {
    "uniform": MatcherSpec(lambda s, g: UniformMatcher(s.topk), TopKMatcherConfig),
    "iou_topk": MatcherSpec(lambda s, g: IoUTopKMatcher(s.topk), TopKMatcherConfig),
    "max_iou": MatcherSpec(lambda s, g: MaxIoUMatcher(s.pos_thresh, s.neg_thresh), MaxIoUMatcherConfig),
    "atss": MatcherSpec(lambda s, g: ATSSMatcher(s.topk), ATSSMatcherConfig),
    "top1": MatcherSpec(lambda s, g: UniformMatcher(1, by_prediction=False)),  # the nearest anchor (UniformMatcher)
    "grid_center": _grid("center"),
    "grid_neighbors": _grid("neighbors"),
    "grid_inside": _grid("inside"),
}


def build_matcher(name: str, section=None, *, stride: float = 32, offset: float = 0.0, num_anchors: int = 1,
                  **options):
    """The matcher called ``name`` (a key of :data:`MATCHERS`) from its own config section (``MatcherConfig.section()``;
    None: the section's defaults), ``options`` overriding fields of that section (``build_matcher("atss", topk=6)``)."""
    spec = MATCHERS[name]
    if spec.section is None:
        if options:
            raise TypeError(f"matcher {name!r} has no options, got {sorted(options)}")
        return spec.build(None, AnchorGrid(stride, offset, num_anchors))
    section = dataclasses.replace(section if section is not None else spec.section(), **options)
    return spec.build(section, AnchorGrid(stride, offset, num_anchors))
