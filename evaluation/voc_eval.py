"""PASCAL VOC detection evaluation, following the devkit exactly (pure numpy).

The matching rules are those of the devkit's ``VOCevaldet.m`` and of its
widely used python port (``voc_eval.py`` of py-faster-rcnn / Detectron):

* per class, detections are sorted by score descending with a **stable**
  sort (ties keep their input order; MATLAB's ``sort`` is stable);
* each detection is compared with every gt box of the same class in its
  image (difficult ones included) and takes the one with the largest IoU
  (first one on ties);
* IoU uses the devkit's **1-based inclusive pixel** arithmetic:
  ``w = x2 - x1 + 1``, ``h = y2 - y1 + 1`` for boxes, intersection and union;
* the detection is a hit when ``ovmax > iou_thresh`` (python port, default;
  ``strict_iou=False`` gives ``ovmax >= iou_thresh`` like ``VOCevaldet.m``.
  They differ only for an IoU of exactly 0.5);
* a hit on a *difficult* gt is neither TP nor FP (ignored); a hit on a gt
  already matched by a higher-scored detection is a FP (duplicate); a miss is
  a FP;
* ``npos`` (the recall denominator) counts non-difficult gts only;
* precision = tp / max(tp + fp, eps) (python port; avoids 0/0 when the first
  detections are ignored ones).

AP:

* VOC2007 11-point (``use_07_metric=True``): mean over ``t`` in
  ``np.arange(0., 1.1, 0.1)`` of ``max(precision[recall >= t])`` (0 when no
  recall reaches ``t``). The thresholds are exactly those of the python port,
  including its float quirk: ``np.arange`` gives 0.30000000000000004,
  0.6000000000000001 and 0.7000000000000001, so a recall of exactly 0.3 / 0.6
  / 0.7 does *not* reach those thresholds;
* VOC2010+ area (``use_07_metric=False``): precision made monotone (the
  envelope), then sum of delta-recall * precision at the points where recall
  changes.

A class without any non-difficult gt has AP = nan (the devkit divides by
npos = 0); ``mAP`` is the mean over the classes that have gt (nan ones are
left out; nan if no class has gt).

Coordinates: every function here takes boxes in **devkit coordinates**, i.e.
1-based inclusive pixel indices ``(xmin, ymin, xmax, ymax)`` as written in the
VOC xml annotations and in the ``comp4_det_*`` result files. A box covering
pixels 0..9 (0-based) is ``(1, 1, 10, 10)`` and has width 10. Boxes in the
usual 0-based continuous ``xyxy`` convention (a pixel ``i`` spans
``[i, i+1)``) convert with :func:`to_devkit_coords`: ``(x1 + 1, y1 + 1, x2,
y2)``.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "VocResult",
    "to_devkit_coords",
    "iou_devkit",
    "voc_ap",
    "evaluate_voc",
    "write_voc_results",
    "read_voc_results",
    "write_metrics_json",
    "summary_table",
]

Detection = tuple  # (image_id, score, x1, y1, x2, y2) in devkit coordinates


@dataclass
class VocResult:
    """Result of :func:`evaluate_voc`.

    Attributes:
        mAP: mean AP over classes with at least one non-difficult gt.
        ap: class name -> AP (nan for a class without non-difficult gt).
        pr_curves: class name -> (recall, precision), the devkit's cumulative
            curves over the score-sorted detections (one entry per detection);
            only for classes with gt.
        npos: class name -> number of non-difficult gts.
        use_07_metric / iou_thresh / strict_iou: the settings used.
    """

    mAP: float
    ap: dict[str, float]
    pr_curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(repr=False)
    npos: dict[str, int] = field(default_factory=dict)
    use_07_metric: bool = True
    iou_thresh: float = 0.5
    strict_iou: bool = True


# ------------------------------------------------------------------ geometry / AP
def to_devkit_coords(boxes_xyxy: Any) -> np.ndarray:
    """0-based continuous ``xyxy`` boxes -> devkit 1-based inclusive pixels.

    ``(x1, y1, x2, y2) -> (x1 + 1, y1 + 1, x2, y2)``: pixel ``i`` (0-based)
    spans ``[i, i + 1)``, so a box ``[0, 10)`` covers pixels 1..10 in devkit
    indexing. Accepts (4,) or (N, 4); returns float64 of the same shape.
    """
    b = np.array(boxes_xyxy, dtype=np.float64)
    if b.shape[-1:] != (4,):
        raise ValueError(f"boxes must have shape (4,) or (N, 4), got {b.shape}")
    b[..., 0] += 1.0
    b[..., 1] += 1.0
    return b


def iou_devkit(box: Sequence[float], gts: Any) -> np.ndarray:
    """IoU of one devkit box with (M, 4) devkit boxes (1-based inclusive)."""
    bb = np.asarray(box, dtype=np.float64)
    g = np.asarray(gts, dtype=np.float64).reshape(-1, 4)
    iw = np.maximum(np.minimum(g[:, 2], bb[2]) - np.maximum(g[:, 0], bb[0]) + 1.0, 0.0)
    ih = np.maximum(np.minimum(g[:, 3], bb[3]) - np.maximum(g[:, 1], bb[1]) + 1.0, 0.0)
    inters = iw * ih
    uni = (
        (bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0)
        + (g[:, 2] - g[:, 0] + 1.0) * (g[:, 3] - g[:, 1] + 1.0)
        - inters
    )
    return inters / uni


def voc_ap(recall: Any, precision: Any, use_07_metric: bool = True) -> float:
    """AP from a (recall, precision) curve, devkit style (see module doc)."""
    rec = np.asarray(recall, dtype=np.float64).ravel()
    prec = np.asarray(precision, dtype=np.float64).ravel()
    if rec.shape != prec.shape:
        raise ValueError(f"recall and precision differ in length: {rec.shape} vs {prec.shape}")
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):  # the python port's thresholds
            mask = rec >= t
            p = float(np.max(prec[mask])) if mask.any() else 0.0
            ap += p / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):  # precision envelope
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


# --------------------------------------------------------------------- evaluation
def _class_gts(
    annotations: Mapping[Hashable, Mapping[str, Any]], class_names: Sequence[str]
) -> dict[str, dict[Hashable, tuple[np.ndarray, np.ndarray]]]:
    """class -> image -> (boxes (M, 4), difficult (M,)) for every image."""
    index = {n: i for i, n in enumerate(class_names)}
    out: dict[str, dict] = {n: {} for n in class_names}
    for img, ann in annotations.items():
        boxes = np.asarray(ann.get("boxes", np.zeros((0, 4))), dtype=np.float64).reshape(-1, 4)
        labels = list(ann.get("labels", []))
        n = len(boxes)
        diff = ann.get("difficult")
        diff = np.zeros(n, bool) if diff is None else np.asarray(diff, dtype=bool).reshape(-1)
        if len(labels) != n or len(diff) != n:
            raise ValueError(
                f"annotations[{img!r}]: {n} boxes but {len(labels)} labels and {len(diff)} difficult flags"
            )
        cls_idx = np.empty(n, dtype=np.int64)
        for j, lab in enumerate(labels):
            if isinstance(lab, str):
                if lab not in index:
                    raise ValueError(f"annotations[{img!r}]: unknown class name {lab!r}")
                cls_idx[j] = index[lab]
            else:
                k = int(lab)
                if not 0 <= k < len(class_names):
                    raise ValueError(
                        f"annotations[{img!r}]: label {lab!r} out of range for {len(class_names)} classes"
                    )
                cls_idx[j] = k
        for k, name in enumerate(class_names):
            m = cls_idx == k
            out[name][img] = (boxes[m], diff[m])
    return out


def _eval_class(
    dets: Sequence[Detection],
    gts: dict[Hashable, tuple[np.ndarray, np.ndarray]],
    cls: str,
    *,
    iou_thresh: float,
    strict_iou: bool,
) -> tuple[np.ndarray, np.ndarray, int]:
    npos = int(sum(int((~d).sum()) for _, d in gts.values()))
    nd = len(dets)
    if nd == 0:
        return np.zeros(0), np.zeros(0), npos
    ids = [d[0] for d in dets]
    arr = np.asarray([d[1:6] for d in dets], dtype=np.float64).reshape(nd, 5)
    if not np.all(np.isfinite(arr)):
        bad = int(np.where(~np.isfinite(arr).all(1))[0][0])
        raise ValueError(f"class {cls!r}: detection #{bad} has NaN/inf: {tuple(dets[bad])!r}")
    order = np.argsort(-arr[:, 0], kind="stable")
    matched = {img: np.zeros(len(b), bool) for img, (b, _) in gts.items()}
    tp = np.zeros(nd)
    fp = np.zeros(nd)
    for rank, di in enumerate(order):
        img = ids[di]
        if img not in gts:
            raise ValueError(f"class {cls!r}: detection on unknown image id {img!r} (not in annotations)")
        boxes, difficult = gts[img]
        ovmax, jmax = -np.inf, -1
        if len(boxes):
            ov = iou_devkit(arr[di, 1:5], boxes)
            jmax = int(np.argmax(ov))
            ovmax = float(ov[jmax])
        hit = ovmax > iou_thresh if strict_iou else ovmax >= iou_thresh
        if hit:
            if not difficult[jmax]:
                if not matched[img][jmax]:
                    tp[rank] = 1.0
                    matched[img][jmax] = True
                else:
                    fp[rank] = 1.0  # duplicate detection
            # hit on a difficult gt: neither TP nor FP
        else:
            fp[rank] = 1.0
    tp = np.cumsum(tp)
    fp = np.cumsum(fp)
    with np.errstate(divide="ignore", invalid="ignore"):
        rec = tp / float(npos) if npos > 0 else np.full(nd, np.nan)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return rec, prec, npos


def _class_detections(detections: Mapping[str, Iterable[Detection]], cls: str) -> list[Detection]:
    """The detections of ``cls`` as a list, each checked to have its six fields."""
    dets = list(detections.get(cls, []))
    for i, d in enumerate(dets):
        if len(d) != 6:
            raise ValueError(f"class {cls!r}: detection #{i} must be (image_id, score, x1, y1, x2, y2), got {d!r}")
    return dets


def evaluate_voc(
    detections: Mapping[str, Iterable[Detection]],
    annotations: Mapping[Hashable, Mapping[str, Any]],
    class_names: Sequence[str],
    *,
    iou_thresh: float = 0.5,
    use_07_metric: bool = True,
    strict_iou: bool = True,
) -> VocResult:
    """VOC devkit evaluation (see the module doc for the exact rules).

    Args:
        detections: class name -> list of ``(image_id, score, x1, y1, x2, y2)``
            in devkit coordinates. Missing classes have no detections.
        annotations: image_id -> ``{"boxes": (N, 4) devkit coords, "labels":
            N class names or 0-based indices into class_names, "difficult":
            (N,) bool (optional, default all False)}``. Every evaluated image
            must be present, including images without objects.
        class_names: the classes to evaluate (order of the report).
        iou_thresh: IoU threshold (0.5 in VOC).
        use_07_metric: VOC2007 11-point AP (True) or VOC2010+ area AP.
        strict_iou: ``ovmax > iou_thresh`` (True, python port) or ``>=``
            (False, MATLAB ``VOCevaldet.m``).

    Raises ``ValueError`` for detections on unknown images / classes or with
    NaN/inf values, and for inconsistent annotations.
    """
    class_names = list(class_names)
    unknown = sorted(set(detections) - set(class_names))
    if unknown:
        raise ValueError(f"detections for unknown class(es) {unknown}; classes are {class_names}")
    gts = _class_gts(annotations, class_names)
    ap: dict[str, float] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    npos_all: dict[str, int] = {}
    for cls in class_names:
        dets = _class_detections(detections, cls)
        rec, prec, npos = _eval_class(dets, gts[cls], cls, iou_thresh=iou_thresh, strict_iou=strict_iou)
        npos_all[cls] = npos
        if npos == 0:
            ap[cls] = float("nan")
            continue
        ap[cls] = voc_ap(rec, prec, use_07_metric)
        curves[cls] = (rec, prec)
    valid = [v for v in ap.values() if not math.isnan(v)]
    mAP = float(np.mean(valid)) if valid else float("nan")
    return VocResult(mAP=mAP, ap=ap, pr_curves=curves, npos=npos_all, use_07_metric=use_07_metric,
                     iou_thresh=iou_thresh, strict_iou=strict_iou)


# ---------------------------------------------------------------------- file I/O
def _result_file(out_dir: str | os.PathLike, split: str, cls: str) -> Path:
    return Path(out_dir) / f"comp4_det_{split}_{cls}.txt"


def write_voc_results(
    out_dir: str | os.PathLike, split: str, detections: Mapping[str, Iterable[Detection]]
) -> list[Path]:
    """Write devkit result files ``comp4_det_<split>_<class>.txt``.

    One line per detection: ``image_id score xmin ymin xmax ymax`` with the
    score as ``%.3f`` and the devkit (1-based) coordinates as ``%.1f``, as the
    python port writes them. The boxes must already be in devkit coordinates
    (use :func:`to_devkit_coords`). A file is written for every class key,
    even with no detection. Returns the written paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for cls, dets in detections.items():
        path = _result_file(out, split, cls)
        lines = []
        for i, d in enumerate(dets):
            if len(d) != 6:
                raise ValueError(f"class {cls!r}: detection #{i} must have 6 fields, got {d!r}")
            img = str(d[0])
            if not img or any(c.isspace() for c in img):
                raise ValueError(f"class {cls!r}: image id {img!r} is empty or contains whitespace")
            s, x1, y1, x2, y2 = (float(v) for v in d[1:])
            lines.append(f"{img} {s:.3f} {x1:.1f} {y1:.1f} {x2:.1f} {y2:.1f}\n")
        path.write_text("".join(lines))
        paths.append(path)
    return paths


def read_voc_results(
    result_dir: str | os.PathLike,
    split: str,
    class_names: Sequence[str],
    *,
    image_id_type: type = str,
) -> dict[str, list[Detection]]:
    """Read devkit result files back into ``{class: [(image_id, score, x1, y1, x2, y2)]}``.

    A missing class file means no detection for that class (empty list). A
    malformed line raises ``ValueError`` naming the file and the 1-based line
    number. Image ids are returned as ``image_id_type`` (``str`` by default,
    e.g. ``"000005"``; pass ``int`` for integer-keyed annotations).
    """
    out: dict[str, list[Detection]] = {}
    for cls in class_names:
        path = _result_file(result_dir, split, cls)
        dets: list[Detection] = []
        if path.is_file():
            with open(path) as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    parts = line.split()
                    try:
                        if len(parts) != 6:
                            raise ValueError(f"expected 6 fields, got {len(parts)}")
                        vals = [float(v) for v in parts[1:]]
                        if not all(math.isfinite(v) for v in vals):
                            raise ValueError("non-finite number")
                        img = image_id_type(parts[0])
                    except ValueError as e:
                        raise ValueError(f"{path}:{lineno}: malformed line {line.rstrip()!r} ({e})") from None
                    dets.append((img, *vals))
        out[cls] = dets
    return out


# ----------------------------------------------------------------------- reports
def _json_num(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


def write_metrics_json(result: VocResult, path: str | os.PathLike) -> None:
    """Write ``{"mAP", "AP_<class>"..., "npos", settings}``; nan -> null."""
    payload: dict[str, Any] = {"mAP": _json_num(result.mAP)}
    for cls, v in result.ap.items():
        payload[f"AP_{cls}"] = _json_num(v)
    payload["npos"] = dict(result.npos)
    payload["use_07_metric"] = bool(result.use_07_metric)
    payload["iou_thresh"] = float(result.iou_thresh)
    payload["strict_iou"] = bool(result.strict_iou)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)


def summary_table(result: VocResult) -> str:
    """Aligned text table of per-class AP (in %) and the mAP."""
    names = list(result.ap)
    w = max([len("class"), len("mAP")] + [len(n) for n in names])
    metric = "VOC07 11-point" if result.use_07_metric else "VOC10 area"
    fmt = lambda v: "n/a" if math.isnan(v) else f"{100 * v:.1f}"  # noqa: E731
    lines = [f"{'class':<{w}}  {'AP':>6}  {'npos':>6}", "-" * (w + 16)]
    for n in names:
        lines.append(f"{n:<{w}}  {fmt(result.ap[n]):>6}  {result.npos.get(n, 0):>6}")
    lines.append("-" * (w + 16))
    cmp = ">" if result.strict_iou else ">="
    lines.append(f"{'mAP':<{w}}  {fmt(result.mAP):>6}  ({metric}, IoU {cmp} {result.iou_thresh:g})")
    return "\n".join(lines)
