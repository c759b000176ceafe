"""COCO-style bounding-box evaluation on a detections file (pure metrics).

This module scores any COCO results list / json file against a COCO
``instances_*.json`` ground truth. It depends only on numpy, json and one of
the two evaluation back-ends:

* ``"pycocotools"``      -- the reference implementation (``COCOeval``);
* ``"faster-coco-eval"`` -- ``faster_coco_eval.COCOeval_faster`` (C++ matching
  and accumulation). Its numbers agree with pycocotools (the tests check every
  summary stat, per-class AP and PR curve to 1e-6 on the coco_tiny sample).

It deliberately imports nothing from the model / data code so that it can
score detections produced by anything.

Conventions
-----------
* Detections are dicts ``{"image_id", "category_id", "bbox": [x, y, w, h],
  "score"}`` in absolute pixels of the original image, ``category_id`` being
  the (non-contiguous) COCO id of the ground-truth file.
* **Evaluated images = all images of the ground-truth file** (``imgIds`` is
  every gt image, the pycocotools default). Images without any detection
  therefore count: all their objects are misses. To score a subset, pass a gt
  restricted to that subset (:func:`restrict_to_images`).
* Summary stats are ``COCOeval.stats[0:12]`` in pycocotools order (names in
  :data:`STAT_NAMES`) as python floats. pycocotools reports ``-1`` for a
  metric that is undefined (e.g. ``APs`` when there is no small object in the
  gt); we keep ``-1`` as is rather than mapping it to 0 or nan.
* An empty detection list is valid: it is evaluated (pycocotools' ``loadRes``
  crashes on ``[]``, so we build an empty result set ourselves) and every
  metric that is defined is ``0.0`` (undefined ones stay ``-1``).
* Per-class AP (``per_class``) = mean of ``precision[:, :, k, area=all,
  maxDets=100]`` over the entries > -1, i.e. AP@[.50:.95]; ``per_class_ap50``
  is the same at IoU=.50 only. A class without (non-crowd) gt gets ``-1``.
  ``per_class_aps`` / ``_apm`` / ``_apl`` are AP@[.50:.95] of the class on
  small / medium / large objects (pycocotools' area ranges, maxDets=100), the
  per-class terms of the ``APs`` / ``APm`` / ``APl`` stats; ``-1`` where the
  class has no gt of that size.
* ``pr_curves`` hold, for every class with gt, the 101-point interpolated
  precision of COCOeval at IoU=.50, area=all, maxDets=100 against the recall
  thresholds ``0, .01, ..., 1``; ``mean_pr_curve`` is their average (the
  curve whose mean is AP50).
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = [
    "STAT_NAMES",
    "BACKENDS",
    "CocoResult",
    "load_detections",
    "validate_detections",
    "evaluate_coco",
    "restrict_to_images",
    "gt_dataset",
    "summary_table",
    "write_metrics_json",
]

STAT_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl",
    "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)
BACKENDS: tuple[str, ...] = ("pycocotools", "faster-coco-eval")
_REQUIRED_KEYS = ("image_id", "category_id", "bbox", "score")
_MAX_LISTED = 5  # how many offending ids / indices an error message lists
_SIZES = {"aps": "small", "apm": "medium", "apl": "large"}  # CocoResult.per_class_<key> -> pycocotools area label


@dataclass
class CocoResult:
    """Result of :func:`evaluate_coco`.

    Attributes:
        stats: the 12 COCO summary metrics (names in :data:`STAT_NAMES`, values
            in [0, 1] or -1 where pycocotools leaves them undefined).
        per_class: class name -> AP@[.50:.95] (area all, maxDets 100); -1 when
            the class has no gt.
        per_class_ap50: class name -> AP@.50; -1 when the class has no gt.
        per_class_aps, per_class_apm, per_class_apl: class name -> AP@[.50:.95]
            on small / medium / large objects; -1 without gt of that size.
        pr_curves: class name -> (recall (101,), precision (101,)) at IoU .50,
            only for classes with gt.
        mean_pr_curve: (recall (101,), precision (101,)) averaged over classes
            with gt (zeros if there is none).
        backend: the back-end used.
        num_images: number of evaluated (gt) images.
        num_detections: number of detections scored.
        category_ids: class name -> COCO category id.
    """

    stats: dict[str, float]
    per_class: dict[str, float]
    per_class_ap50: dict[str, float]
    pr_curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(repr=False)
    mean_pr_curve: tuple[np.ndarray, np.ndarray] = field(repr=False)
    backend: str = "pycocotools"
    num_images: int = 0
    num_detections: int = 0
    category_ids: dict[str, int] = field(default_factory=dict, repr=False)
    per_class_aps: dict[str, float] = field(default_factory=dict, repr=False)
    per_class_apm: dict[str, float] = field(default_factory=dict, repr=False)
    per_class_apl: dict[str, float] = field(default_factory=dict, repr=False)


# --------------------------------------------------------------------------- I/O
def load_detections(path: str | os.PathLike) -> list[dict]:
    """Read a COCO results json (a list of detection dicts).

    Raises ``ValueError`` if the file is not valid json or not a list.
    Content is checked by :func:`validate_detections`.
    """
    path = Path(path)
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a valid json file ({e})") from e
    if not isinstance(data, list):
        raise ValueError(
            f"{path}: a COCO results file must contain a json list of detections, "
            f"got {type(data).__name__}"
        )
    return data


def write_metrics_json(result: CocoResult, path: str | os.PathLike) -> None:
    """Write stats, per-class AP, AP50 and AP on small / medium / large objects of ``result`` as json."""
    payload = {
        "backend": result.backend,
        "num_images": result.num_images,
        "num_detections": result.num_detections,
        "stats": {k: float(v) for k, v in result.stats.items()},
        "per_class": {k: float(v) for k, v in result.per_class.items()},
        "per_class_ap50": {k: float(v) for k, v in result.per_class_ap50.items()},
        **{f"per_class_{size}": {k: float(v) for k, v in getattr(result, f"per_class_{size}").items()}
           for size in _SIZES},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)


# -------------------------------------------------------------------- validation
def _fmt_ids(ids: Iterable[Any]) -> str:
    ids = sorted(ids)
    shown = ", ".join(repr(i) for i in ids[:_MAX_LISTED])
    return shown + (f", ... ({len(ids)} in total)" if len(ids) > _MAX_LISTED else "")


def restrict_to_images(coco_gt: Any, image_ids: Iterable) -> dict:
    """The gt (a path, dict or COCO object) with only the images ``image_ids`` and their annotations, every
    category kept: the ground truth of the images that were predicted (an unreadable image is left out of it)."""
    gt, keep = gt_dataset(coco_gt), set(image_ids)
    return {**gt, "images": [im for im in gt["images"] if im["id"] in keep],
            "annotations": [a for a in gt["annotations"] if a["image_id"] in keep]}


def gt_dataset(coco_gt: Any) -> dict:
    """The raw gt dict of a path / dict / COCO object (either back-end)."""
    if isinstance(coco_gt, dict):
        return coco_gt
    if isinstance(coco_gt, (str, os.PathLike)):
        with open(coco_gt) as f:
            return json.load(f)
    dataset = getattr(coco_gt, "dataset", None)
    if isinstance(dataset, dict):
        return dataset
    raise TypeError(
        "coco_gt must be a path to an instances json, its loaded dict, or a COCO object; "
        f"got {type(coco_gt).__name__}"
    )


def _gt_ids(coco_gt: Any) -> tuple[set, set]:
    if hasattr(coco_gt, "getImgIds") and hasattr(coco_gt, "getCatIds"):
        return set(coco_gt.getImgIds()), set(coco_gt.getCatIds())
    ds = gt_dataset(coco_gt)
    return {im["id"] for im in ds.get("images", [])}, {c["id"] for c in ds.get("categories", [])}


_FAST_NUM = (int, float)  # exact types (bool excluded) for the fast path


def _is_number(x: Any) -> bool:
    return type(x) in _FAST_NUM or (isinstance(x, Real) and not isinstance(x, bool))


def _is_int(x: Any) -> bool:
    return type(x) is int or (isinstance(x, Integral) and not isinstance(x, bool))


def _clean_one(i: int, d: Any, source: str) -> dict:
    """Detection #i as a fresh dict of plain python types; a malformed one raises naming its index."""
    if not isinstance(d, dict):
        raise ValueError(f"{source}: detection #{i} is not a dict (got {type(d).__name__})")
    try:
        img, cat, bbox, score = d["image_id"], d["category_id"], d["bbox"], d["score"]
    except KeyError:
        missing = [k for k in _REQUIRED_KEYS if k not in d]
        raise ValueError(
            f"{source}: detection #{i} is missing key(s) {missing} "
            f"(required: {list(_REQUIRED_KEYS)}); got keys {sorted(map(str, d))}"
        ) from None
    if not (
        type(bbox) is list and len(bbox) == 4 and all(type(v) in _FAST_NUM for v in bbox)
    ) and (
        isinstance(bbox, (str, bytes))
        or not isinstance(bbox, (Sequence, np.ndarray))
        or len(bbox) != 4
        or not all(_is_number(v) for v in bbox)
    ):
        raise ValueError(f"{source}: detection #{i} bbox must be 4 numbers [x, y, w, h], got {bbox!r}")
    if not _is_number(score):
        raise ValueError(f"{source}: detection #{i} score must be a number, got {score!r}")
    if not _is_int(img):
        raise ValueError(f"{source}: detection #{i} image_id must be an integer, got {img!r}")
    if not _is_int(cat):
        raise ValueError(f"{source}: detection #{i} category_id must be an integer, got {cat!r}")
    return {"image_id": int(img), "category_id": int(cat), "bbox": [float(v) for v in bbox], "score": float(score)}


def _check_ids(out: list[dict], img_ids: set, cat_ids: set, *, source: str) -> None:
    """Every image and category id is one of the ground truth's (the unknown ones are listed)."""
    bad_img = {d["image_id"] for d in out} - img_ids
    if bad_img:
        raise ValueError(
            f"{source}: {len(bad_img)} image id(s) are not in the ground truth: {_fmt_ids(bad_img)}"
        )
    bad_cat = {d["category_id"] for d in out} - cat_ids
    if bad_cat:
        raise ValueError(
            f"{source}: {len(bad_cat)} category id(s) are not in the ground truth "
            f"(COCO ids are non-contiguous, e.g. 1..90): {_fmt_ids(bad_cat)}"
        )


def _check_values(out: list[dict], dets: list, source: str) -> None:
    """No NaN/inf in a bbox or score, no negative width/height (the first offender is quoted from ``dets``)."""
    if not out:
        return
    B = np.asarray([d["bbox"] for d in out], dtype=np.float64).reshape(-1, 4)
    S = np.asarray([d["score"] for d in out], dtype=np.float64)
    finite = np.isfinite(B).all(axis=1) & np.isfinite(S)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        i = int(bad[0])
        raise ValueError(
            f"{source}: {len(bad)} detection(s) have NaN/inf in bbox or score "
            f"(first: #{i} bbox={dets[i]['bbox']!r} score={dets[i]['score']!r})"
        )
    negative = (B[:, 2] < 0) | (B[:, 3] < 0)
    if negative.any():
        bad = np.flatnonzero(negative)
        i = int(bad[0])
        raise ValueError(
            f"{source}: {len(bad)} detection(s) have negative width/height "
            f"(first: #{i} bbox={dets[i]['bbox']!r}; bbox must be [x, y, w, h] with w, h >= 0)"
        )


def _check_and_clean(dets: Any, img_ids: set, cat_ids: set, *, source: str) -> list[dict]:
    """Validate ``dets`` (see :func:`validate_detections`) and return fresh
    dicts with plain python types and only the four result keys (loadRes
    mutates its input; the caller's list must stay untouched)."""
    if not isinstance(dets, list):
        raise ValueError(f"{source}: expected a list of detection dicts, got {type(dets).__name__}")
    out = [_clean_one(i, d, source) for i, d in enumerate(dets)]
    _check_ids(out, img_ids, cat_ids, source=source)
    _check_values(out, dets, source)
    return out


def validate_detections(dets: Any, coco_gt: Any, source: str = "detections") -> None:
    """Check a COCO results list against a gt; raise ``ValueError`` on a problem.

    ``coco_gt``: a path, the gt dict or a COCO object (either back-end).
    Every message starts with ``source`` (e.g. the results file path) and
    names the problem: not a list, non-dict element, missing keys, malformed
    bbox / score / ids, unknown image ids, unknown category ids (a few
    listed), NaN/inf in bbox or score, negative width/height.
    """
    img_ids, cat_ids = _gt_ids(coco_gt)
    _check_and_clean(dets, img_ids, cat_ids, source=source)


# -------------------------------------------------------------------- evaluation
def _load_gt(coco_gt: Any, backend: str):
    """A COCO object of the requested back-end for ``coco_gt``."""
    quiet = contextlib.redirect_stdout(io.StringIO())
    if backend == "pycocotools":
        if isinstance(coco_gt, COCO):
            return coco_gt
        with quiet:
            if isinstance(coco_gt, (str, os.PathLike)):
                return COCO(str(coco_gt))
            gt = COCO()
            gt.dataset = gt_dataset(coco_gt)
            gt.createIndex()
            return gt
    from faster_coco_eval import COCO as FCOCO  # optional

    if isinstance(coco_gt, FCOCO):
        return coco_gt
    with quiet:
        if isinstance(coco_gt, (str, os.PathLike)):
            return FCOCO(str(coco_gt))
        # shallow copy of the top-level dict: annotation dicts are shared (the
        # evaluators only add an 'ignore' flag to them, as pycocotools does).
        return FCOCO(gt_dataset(coco_gt))


def _load_res(gt, dets: list[dict], backend: str):
    with contextlib.redirect_stdout(io.StringIO()):
        if dets or backend != "pycocotools":
            return gt.loadRes(dets)

        res = COCO()
        res.dataset = {
            "images": list(gt.dataset["images"]),
            "categories": copy.deepcopy(gt.dataset.get("categories", [])),
            "annotations": [],
        }
        res.createIndex()
        return res


def _mean_valid(a: np.ndarray) -> float:
    v = a[a > -1]
    return float(v.mean()) if v.size else -1.0


def _run_cocoeval(gt, dt, *, backend: str, iou_type: str, verbose: bool):
    """The back-end's COCOeval over every gt image, evaluated, accumulated and summarised (quietly)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        if backend == "pycocotools":
            E = COCOeval(gt, dt, iouType=iou_type)
        else:
            from faster_coco_eval import COCOeval_faster  # optional

            E = COCOeval_faster(gt, dt, iouType=iou_type, print_function=print)
        E.params.imgIds = sorted(gt.getImgIds())  # evaluate on every gt image
        E.evaluate()
        E.accumulate()
        E.summarize()
    if verbose:
        print("\n".join(line for line in out.getvalue().splitlines() if "Average" in line))
    return E


def _class_names(gt, cat_ids: Sequence) -> list[str]:
    """The gt's name of each category id; a name shared by several ids gets its id: ``"cat (7)"``."""
    cats = {c["id"]: c["name"] for c in gt.dataset.get("categories", [])}
    names = [cats.get(cid, str(cid)) for cid in cat_ids]
    return [f"{n} ({cid})" if names.count(n) > 1 else n for n, cid in zip(names, cat_ids)]


def _per_class(E, gt) -> dict:
    """Per-class AP, AP50, AP per object size, PR curves (IoU .50) and the category id of each name, from
    ``E.eval["precision"]``."""
    p = E.params
    precision = np.asarray(E.eval["precision"], dtype=float)  # [T, R, K, A, M]
    recall_thrs = np.asarray(p.recThrs, dtype=float)
    t50 = int(np.argmin(np.abs(np.asarray(p.iouThrs) - 0.5)))
    a_all = list(p.areaRngLbl).index("all")
    m100 = list(p.maxDets).index(100)
    areas = {size: list(p.areaRngLbl).index(label) for size, label in _SIZES.items()}
    out = {"per_class": {}, "per_class_ap50": {}, "pr_curves": {}, "category_ids": {}}
    out.update({f"per_class_{size}": {} for size in _SIZES})
    for k, (cid, name) in enumerate(zip(p.catIds, _class_names(gt, p.catIds))):
        out["category_ids"][name] = int(cid)
        pk = precision[:, :, k, a_all, m100]
        out["per_class"][name] = _mean_valid(pk)
        out["per_class_ap50"][name] = _mean_valid(pk[t50])
        for size, a in areas.items():
            out[f"per_class_{size}"][name] = _mean_valid(precision[:, :, k, a, m100])
        if np.all(pk[t50] > -1):
            out["pr_curves"][name] = (recall_thrs.copy(), pk[t50].copy())
    curves = out["pr_curves"]
    mean_prec = np.mean([c[1] for c in curves.values()], axis=0) if curves else np.zeros_like(recall_thrs)
    out["mean_pr_curve"] = (recall_thrs.copy(), mean_prec)
    return out


def evaluate_coco(
    coco_gt: Any,
    detections: list[dict] | str | os.PathLike,
    *,
    backend: str = "pycocotools",
    iou_type: str = "bbox",
    verbose: bool = False,
) -> CocoResult:
    """Evaluate COCO detections against a gt and return a :class:`CocoResult`.

    Args:
        coco_gt: path to an ``instances_*.json``, its loaded dict, or a COCO
            object (pycocotools or faster-coco-eval).
        detections: list of result dicts, or a path to a results json. They
            are validated first (:func:`validate_detections`); the caller's
            dicts are not modified.
        backend: ``"pycocotools"`` or ``"faster-coco-eval"``.
        iou_type: only ``"bbox"`` is supported.
        verbose: print the standard COCO summary.

    All gt images are evaluated (see module doc); an empty detection list
    gives 0.0 for every defined metric.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if iou_type != "bbox":
        raise ValueError(f"iou_type {iou_type!r} is not supported; only 'bbox' is")
    source = "detections"
    if isinstance(detections, (str, os.PathLike)):
        source = str(detections)
        detections = load_detections(detections)
    gt = _load_gt(coco_gt, backend)
    clean = _check_and_clean(detections, set(gt.getImgIds()), set(gt.getCatIds()), source=source)
    E = _run_cocoeval(gt, _load_res(gt, clean, backend), backend=backend, iou_type=iou_type, verbose=verbose)
    stats = {name: float(v) for name, v in zip(STAT_NAMES, np.asarray(E.stats, dtype=float)[:12])}
    return CocoResult(stats=stats, **_per_class(E, gt), backend=backend, num_images=len(E.params.imgIds),
                      num_detections=len(detections))


# ---------------------------------------------------------------------- reports
def _fmt(v: float) -> str:
    return "n/a" if v is None or v < 0 or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def summary_table(result: CocoResult) -> str:
    """Aligned text table: the 12 stats, then per-class AP and AP50 (in %).

    The rows are the classes of the evaluated split: those with gt in it (a class without gt has no AP; a line
    says how many are left out, e.g. the 63 COCO classes absent from a 17-class set); the last row is the mean
    (= stats AP / AP50).
    """
    lines = []
    s = result.stats
    head = "  ".join(f"{n:>6}" for n in STAT_NAMES)
    lines.append(head)
    lines.append("  ".join(f"{_fmt(s[n]):>6}" for n in STAT_NAMES))
    lines.append("")
    names = [n for n, v in result.per_class.items() if v > -1]
    absent = len(result.per_class) - len(names)
    w = max([len("class"), len("mean")] + [len(n) for n in names])
    lines.append(f"{'class':<{w}}  {'AP':>6}  {'AP50':>6}")
    lines.append("-" * (w + 16))
    for n in names:
        lines.append(f"{n:<{w}}  {_fmt(result.per_class[n]):>6}  {_fmt(result.per_class_ap50[n]):>6}")
    lines.append("-" * (w + 16))
    lines.append(f"{'mean':<{w}}  {_fmt(s['AP']):>6}  {_fmt(s['AP50']):>6}")
    if absent:
        lines.append(f"({absent} of the {len(result.per_class)} classes have no ground truth in this split: "
                     "not listed)")
    return "\n".join(lines)
