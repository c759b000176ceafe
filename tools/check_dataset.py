"""Look at a dataset before training on it: counts, box shapes, anchor coverage and the problems, any layout.

    python -m tools.check_dataset --config config/quickstart.yaml
    python -m tools.check_dataset --config config/quickstart.yaml --opts data.dataset=yolo \
        data.root=my_data/data.yaml data.train_split=train data.val_split=val model.num_classes=auto \
        --out check.json

For each split (``--split``, default ``data.train_split`` and ``data.val_split``) it reads the annotations as
written (``data.build.DATASETS[...].read_raw``: before the clipping and dropping the dataset does) and reports

* images, boxes (crowd / VOC-difficult regions apart), classes and the boxes of each class;
* the box size ``sqrt(area)`` histogram, split into COCO's small (area < 32^2), medium (< 96^2) and large,
  and the aspect (h / w) histogram of each of the three (area: the annotation's ``area``, the segment's for
  COCO files, else the box's, as the COCO evaluation takes it);
* anchor coverage: the share of boxes whose best IoU with the model's anchors (``models.anchors``, the config's
  ``model.anchors``) is below 0.5, and below ``model.matcher.pos_ignore_thresh`` (their matches are ignored:
  such a box trains nothing), with the boxes and anchors at the training resolution: resize_shortest_edge
  scaled to the largest ``data.train_min_size`` capped by ``data.train_max_size``, yolo pipeline resized to
  ``data.yolo.resize_shape`` (scale jitter, mosaic and crops left out);
* problems: unreadable images, images whose decoded size differs from the annotated one, zero-area boxes,
  boxes of negative width or height, boxes reaching more than 1 px out of their image, labels outside the class
  list, duplicate boxes (same class, IoU >= 0.95), duplicate images (same bytes: SHA-1) and YOLO images without
  a label file (where it was looked for), each naming its file (and line).

It exits with status 1 when training would fail, saying why: a split that cannot be read or built (a label
outside the class names, a malformed file, ``model.num_classes`` against the data), a split without images
(``num_samples=0``), a training split with fewer images than one batch (``solver.batch_size``), more unreadable
images than ``train.max_skip_fraction`` allows. The rest are warnings: training clips, drops or skips them.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torchvision.ops import box_iou

if __package__ in (None, ""):  # python tools/<name>.py: the repository root on sys.path (tools/_bootstrap.py)
    import _bootstrap  # noqa: F401

from config import load_config
from config.loader import resolve_num_classes
from data.build import DATASETS, build_dataset
from data.coco import OUTSIDE_TOLERANCE
from data.dataset_base import DetectionDatasetBase, RawSplit
from data.transforms import Compose, ResizeShortestEdge
from data.yolo_transforms import Resize
from models import build_model
from utils.script import run_script, setup_logging
from utils.errors import UserError

SIZE_EDGES = (0, 8, 16, 32, 64, 96, 128, 256, 512, math.inf)  # sqrt(area) px; 32 and 96: COCO's area ranges
ASPECT_EDGES = (0, 1 / 8, 1 / 4, 1 / 2, 4 / 5, 5 / 4, 2, 4, 8, math.inf)  # h / w
DUPLICATE_IOU = 0.95
LISTED = 20  # problems listed per kind in the printout (the JSON has them all)


def size_category(area: np.ndarray) -> np.ndarray:
    """COCO's area ranges: "small" (< 32^2), "medium" (< 96^2), "large"."""
    return np.where(area < 32 ** 2, "small", np.where(area < 96 ** 2, "medium", "large"))


def _label(lo: float, hi: float) -> str:
    return f"{lo:.3g}+" if hi == math.inf else f"{lo:.3g}-{hi:.3g}"


def _xyxy(xywh: list) -> torch.Tensor:
    t = torch.tensor(xywh, dtype=torch.float64).reshape(-1, 4)
    return torch.cat([t[:, :2], t[:, :2] + t[:, 2:]], 1)


def box_statistics(anns: list[dict], names: dict[int, str]) -> dict:
    """Per-class counts, the size histogram and the aspect histogram per COCO size of non-crowd boxes."""
    boxes = [a for a in anns if not a.get("iscrowd") and a["bbox"][2] > 0 and a["bbox"][3] > 0]
    wh = np.array([a["bbox"][2:4] for a in boxes], dtype=np.float64).reshape(-1, 2)
    area = np.array([a.get("area") or a["bbox"][2] * a["bbox"][3] for a in boxes], dtype=np.float64)
    cats = size_category(area)
    counts = Counter(a["category_id"] for a in anns if not a.get("iscrowd"))
    size_hist = np.histogram(np.sqrt(area), bins=SIZE_EDGES)[0]
    aspect = wh[:, 1] / wh[:, 0]
    return {
        "per_class": {name: counts.get(cid, 0) for cid, name in names.items()},
        "sizes": {c: int((cats == c).sum()) for c in ("small", "medium", "large")},
        "size_histogram": [{"sqrt_area": _label(lo, hi), "size": str(size_category(np.array([lo * lo]))[0]),
                            "boxes": int(n)} for lo, hi, n in zip(SIZE_EDGES, SIZE_EDGES[1:], size_hist)],
        "aspect_histogram": {"h_over_w": [_label(lo, hi) for lo, hi in zip(ASPECT_EDGES, ASPECT_EDGES[1:])],
                             **{c: np.histogram(aspect[cats == c], bins=ASPECT_EDGES)[0].tolist()
                                for c in ("small", "medium", "large")}},
    }


def training_resize(cfg):
    """The resize that sets the training resolution (``output_shape(h, w)``) and its description."""
    d = cfg.data
    if d.pipeline == "yolo":
        return (Resize(d.yolo.resize_shape),
                f"data.yolo.resize_shape {list(d.yolo.resize_shape)} (h, w; scale jitter left out)")
    size = max(d.train_min_size)
    return (ResizeShortestEdge(size, d.train_max_size),
            f"shorter side {size} (the largest of data.train_min_size), longer side <= {d.train_max_size}")


@torch.no_grad()
def anchor_coverage(cfg, raw: RawSplit, anchor_generator, pos_ignore_thresh: float) -> dict:
    """Best IoU of every non-crowd box with the anchors of its image at the training resolution."""
    resize, resolution = training_resize(cfg)
    stride = anchor_generator.stride
    by_image = defaultdict(list)
    for a in raw.coco["annotations"]:
        if not a.get("iscrowd") and a["bbox"][2] > 0 and a["bbox"][3] > 0:
            by_image[a["image_id"]].append(a["bbox"])
    best = []
    for im in raw.coco["images"]:
        h, w = im.get("height") or 0, im.get("width") or 0
        if not by_image.get(im["id"]) or h <= 0 or w <= 0:
            continue
        nh, nw = resize.output_shape(h, w)
        boxes = _xyxy(by_image[im["id"]]) * torch.tensor([nw / w, nh / h] * 2)
        # the backbone's output is ceil(side / stride): every stride-2 layer rounds up
        anchors = anchor_generator(math.ceil(nh / stride), math.ceil(nw / stride)).double()
        best.append(box_iou(boxes, anchors).max(dim=1).values)
    best_iou = torch.cat(best).numpy() if best else np.zeros(0)
    share = (lambda t: float((best_iou < t).mean()) if len(best_iou) else 0.0)
    return {"resolution": resolution, "stride": stride, "cell_anchors_wh": [
        [round(float(x2 - x1), 1), round(float(y2 - y1), 1)] for x1, y1, x2, y2 in anchor_generator.cell_anchors],
        "boxes": int(len(best_iou)), "mean_best_iou": float(best_iou.mean()) if len(best_iou) else 0.0,
        "best_iou_below_0.5": share(0.5), f"best_iou_below_{pos_ignore_thresh:g}": share(pos_ignore_thresh)}


def _where(raw: RawSplit, ann: dict, images: dict) -> str:
    return ann.get("source") or f"{raw.image_path(images[ann['image_id']])} (annotation id {ann['id']})"


def box_problems(raw: RawSplit) -> dict[str, list[str]]:
    """Zero-area, out-of-image, unknown-class and duplicate boxes, each named by file (and line)."""
    images = {im["id"]: im for im in raw.coco["images"]}
    known = {c["id"] for c in raw.coco["categories"]}
    out: dict[str, list[str]] = {"zero_area_boxes": [], "negative_size_boxes": [], "out_of_image_boxes": [],
                                 "labels_outside_names": [], "duplicate_boxes": []}
    out["labels_outside_names"] += [str(i) for i in raw.issues if i.kind == "label_outside_names"]
    out["images_without_label_file"] = [str(i) for i in raw.issues if i.kind == "no_label_file"]
    out["read_issues"] = [str(i) for i in raw.issues  # images without size...
                          if i.kind not in ("label_outside_names", "no_label_file")]
    by_key = defaultdict(list)
    for a in raw.coco["annotations"]:
        x, y, w, h = (float(v) for v in a["bbox"])
        im = images[a["image_id"]]
        H, W = im.get("height") or 0, im.get("width") or 0
        if a["category_id"] not in known:
            out["labels_outside_names"].append(f"{_where(raw, a, images)}: category id {a['category_id']} is not "
                                               f"in the categories")
        if w < 0 or h < 0:
            side = " and ".join(s for s, v in (("width", w), ("height", h)) if v < 0)
            out["negative_size_boxes"].append(f"{_where(raw, a, images)}: bbox [x, y, w, h] {[x, y, w, h]}: "
                                              f"negative {side}")
            continue
        if not (w > 0 and h > 0 and math.isfinite(w + h)):
            out["zero_area_boxes"].append(f"{_where(raw, a, images)}: bbox [x, y, w, h] {[x, y, w, h]}")
            continue
        if H > 0 and W > 0 and (x < -OUTSIDE_TOLERANCE or y < -OUTSIDE_TOLERANCE or x + w > W + OUTSIDE_TOLERANCE
                                or y + h > H + OUTSIDE_TOLERANCE):
            inside = x < W and y < H and x + w > 0 and y + h > 0
            out["out_of_image_boxes"].append(f"{_where(raw, a, images)}: xyxy {[x, y, x + w, y + h]} in a {W} x {H} "
                                             f"image ({'clipped' if inside else 'dropped: entirely outside'})")
        by_key[a["image_id"], a["category_id"]].append(a)
    for anns in by_key.values():
        if len(anns) > 1:
            boxes = _xyxy([a["bbox"] for a in anns])
            iou = box_iou(boxes, boxes).triu(diagonal=1)  # each pair once
            for i, j in (iou >= DUPLICATE_IOU).nonzero().tolist():
                out["duplicate_boxes"].append(f"{_where(raw, anns[j], images)} repeats {_where(raw, anns[i], images)}"
                                              f" (IoU {float(iou[i, j]):.2f})")
    return out


def image_problems(raw: RawSplit) -> dict[str, list]:
    """Unreadable images, decoded sizes that differ from the annotated ones, and images with the same bytes."""
    unreadable, mismatch, by_hash = [], [], defaultdict(list)
    for im in raw.coco["images"]:
        path = raw.image_path(im)
        image, reason = DetectionDatasetBase.read_image(path)  # as training decodes it
        if image is None:
            unreadable.append(f"{path}: {reason}")
            continue
        by_hash[hashlib.sha1(Path(path).read_bytes()).hexdigest()].append(path)
        h, w = im.get("height") or 0, im.get("width") or 0
        if h > 0 and w > 0 and image.shape[:2] != (h, w):
            mismatch.append(f"{path}: decodes to (h, w) {image.shape[:2]}, annotated {(h, w)}")
    return {"unreadable_images": unreadable, "size_mismatch": mismatch,
            "duplicate_images": [paths for paths in by_hash.values() if len(paths) > 1]}


def _build_error(cfg, split: str, no_label_file: list[str]) -> Optional[str]:
    """Why building the split as training / evaluation does fails, or None. A training split needs at least one
    batch (``solver.batch_size`` images, after ``data.filter_empty``): training stops before its first step
    without one. ``no_label_file``: the images without a label file (YOLO), named when they are why."""
    training = split == cfg.data.train_split
    try:
        ds = build_dataset(cfg, split, is_train=training, transforms=Compose([]))
    except UserError as e:
        return str(e)
    empty = ": data.filter_empty drops the images without boxes" if training and cfg.data.filter_empty else ""
    hint = f" ({len(no_label_file)} without a label file, e.g. {no_label_file[0]})" if no_label_file else ""
    if len(ds) == 0:
        return f"split {split!r} has no {'training ' if training else ''}images (num_samples=0){empty}{hint}"
    if training and len(ds) < cfg.solver.batch_size:
        return (f"{len(ds)} training images{' with boxes' if empty else ''}, fewer than one batch of "
                f"solver.batch_size={cfg.solver.batch_size}: training would stop before its first step; set "
                f"--opts solver.batch_size={_batch_for(len(ds))} (docs/your_own_data.md, small sets){hint}")
    return None


def _batch_for(num_images: int) -> int:
    """The largest power of two that is at most ``num_images`` (a batch the split fills)."""
    return 1 << (max(1, num_images).bit_length() - 1)


def check_split(cfg, split: str, *, images: bool = True) -> dict:
    """The report of one split (see the module docstring); its ``errors`` are what training would fail on."""
    kind = cfg.data.dataset
    report: dict = {"split": split, "dataset": kind, "root": cfg.data.root, "errors": []}
    try:
        raw = DATASETS[kind].read_raw(cfg, split)
    except UserError as e:
        report["errors"].append(str(e))
        return report
    names = {c["id"]: str(c.get("name", c["id"])) for c in raw.coco["categories"]}
    anns = raw.coco["annotations"]
    boxed = {a["image_id"] for a in anns if not a.get("iscrowd")}
    report.update({"images": len(raw.coco["images"]),
                   "images_without_boxes": sum(im["id"] not in boxed for im in raw.coco["images"]),
                   "boxes": sum(not a.get("iscrowd") for a in anns),
                   "crowd_or_difficult": sum(bool(a.get("iscrowd")) for a in anns), "classes": len(names)})
    report.update(box_statistics(anns, names))
    model = build_model(resolve_num_classes(cfg, list(names.values())))
    report["anchors"] = anchor_coverage(cfg, raw, model.anchor_generator, cfg.model.matcher.pos_ignore_thresh)
    problems = box_problems(raw)
    problems.update(image_problems(raw) if images else {})
    report["problems"] = problems
    if problems["labels_outside_names"]:
        report["errors"].append(f"{len(problems['labels_outside_names'])} label(s) outside the class names, e.g. "
                                f"{problems['labels_outside_names'][0]}")
    limit = max(10, int(cfg.train.max_skip_fraction * report["images"]))
    if len(problems.get("unreadable_images", [])) > limit:
        report["errors"].append(f"{len(problems['unreadable_images'])} unreadable images, more than the "
                                f"{limit} training skips (train.max_skip_fraction)")
    if not report["images"]:
        report["errors"].append(f"split {split!r} has no images (num_samples=0)")
    elif not report["errors"] and (error := _build_error(cfg, split, problems["images_without_label_file"])):
        report["errors"].append(error)
    return report


def _histogram_lines(report: dict) -> list[str]:
    sizes = report["size_histogram"]
    aspect = report["aspect_histogram"]
    lines = ["  box size sqrt(area) px: " + "  ".join(f"{b['sqrt_area']}: {b['boxes']}" for b in sizes),
             "    COCO sizes: " + "  ".join(f"{k} {v}" for k, v in report["sizes"].items())]
    lines.append("  aspect h/w " + "".join(f"{b:>11}" for b in aspect["h_over_w"]))
    for c in ("small", "medium", "large"):
        lines.append(f"    {c:<8}" + "".join(f"{n:>11}" for n in aspect[c]))
    return lines


def format_report(report: dict) -> str:
    """The printout of one split's report."""
    head = f"split {report['split']!r} ({report['dataset']}, {report['root']})"
    if "images" not in report:
        return f"{head}: cannot be read"
    unlabelled = len(report["problems"]["images_without_label_file"])
    where = f", {unlabelled} of them without a label file" if unlabelled else ""
    lines = [f"{head}: {report['images']} images ({report['images_without_boxes']} without boxes{where}), "
             f"{report['boxes']} boxes (+ {report['crowd_or_difficult']} crowd / difficult), "
             f"{report['classes']} classes"]
    counts = sorted(report["per_class"].items(), key=lambda kv: -kv[1])
    lines.append("  boxes per class: " + ", ".join(f"{n} {c}" for n, c in counts if c)
                 + (f"; none: {', '.join(n for n, c in counts if not c)}" if any(c == 0 for _, c in counts) else ""))
    lines += _histogram_lines(report)
    a = report["anchors"]
    low = next(k for k in a if k.startswith("best_iou_below_") and k != "best_iou_below_0.5")
    lines.append(f"  anchors at the training resolution ({a['resolution']}; stride {a['stride']}, cell anchors (w, h) "
                 f"{a['cell_anchors_wh']}): {100 * a['best_iou_below_0.5']:.1f}% of {a['boxes']} boxes have a best "
                 f"anchor IoU < 0.5, {100 * a[low]:.1f}% < {low.rsplit('_', 1)[1]} (model.matcher.pos_ignore_thresh); "
                 f"mean best IoU {a['mean_best_iou']:.3f}")
    for kind, found in report["problems"].items():
        lines.append(f"  {kind.replace('_', ' ')}: {len(found)}")
        lines += [f"    {item if isinstance(item, str) else ' = '.join(item)}" for item in found[:LISTED]]
        lines += [f"    ... ({len(found) - LISTED} more in the JSON report)"] if len(found) > LISTED else []
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.check_dataset", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--config", "-c", required=True, help="the config whose data section is checked")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--split", action="append", default=None,
                   help="a split to check (repeatable; default: data.train_split and data.val_split)")
    p.add_argument("--out", type=Path, default=Path("dataset_check.json"), help="the JSON report")
    p.add_argument("--skip_images", action="store_true", help="do not decode and hash the images (faster)")
    args = p.parse_args(argv)
    setup_logging()
    cfg = load_config(args.config, args.opts)
    splits = list(dict.fromkeys(args.split or [cfg.data.train_split, cfg.data.val_split]))
    reports = [check_split(cfg, s, images=not args.skip_images) for s in splits]
    for r in reports:
        print(format_report(r))
    errors = [f"split {r['split']!r}: {e}" for r in reports for e in r["errors"]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": args.config, "opts": args.opts, "splits": reports, "errors": errors},
                                   indent=1))
    print(f"report written to {args.out}")
    if errors:
        print("errors training would fail on:\n" + "\n".join(f"  {e}" for e in errors))
        return 1
    print("no errors training would fail on")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
