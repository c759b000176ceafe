"""The layouts tools/convert_dataset.py writes: COCO, YOLO and VOC XML (:data:`WRITERS`), images linked or copied
(:class:`Placer`), and the ``--opts`` that train on the result (:func:`training_opts`)."""
from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Optional, Sequence

import yaml

from data.dataset_base import DatasetError, RawSplit, image_size

__all__ = ["Placer", "WRITERS", "relative_names", "training_opts", "voc_xml_element"]


def relative_names(raw: RawSplit) -> dict[int, Path]:
    """Image id -> the image's path below the folder all the split's images share (``images/train/a.jpg``,
    ``images/train/b.jpg`` -> ``a.jpg``, ``b.jpg``; sub-folders below it are kept)."""
    paths = {im["id"]: os.path.normpath(raw.image_path(im)) for im in raw.coco["images"]}
    if not paths:
        return {}
    common = os.path.commonpath([os.path.dirname(p) for p in paths.values()])
    return {i: Path(os.path.relpath(p, common)) for i, p in paths.items()}


class Placer:
    """Puts each image of the output where its layout wants it: a symbolic link, or a copy."""

    def __init__(self, copy: bool):
        self.copy = copy
        self.missing: list[str] = []

    def place(self, src: Path, dst: Path) -> Path:
        """The image ``src`` at ``dst``; returns ``dst``."""
        if dst.exists() or dst.is_symlink():
            raise DatasetError(f"two images of one split would both be written to {dst}")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not src.is_file():
            self.missing.append(str(src))
        elif self.copy:
            shutil.copy2(src, dst)
        else:
            os.symlink(os.path.abspath(src), dst)
        return dst


def _size(raw: RawSplit, image: dict) -> tuple[int, int]:
    """(h, w) of an image: as annotated, else from its header ((0, 0) when neither)."""
    h, w = image.get("height") or 0, image.get("width") or 0
    return (h, w) if h > 0 and w > 0 else (image_size(raw.image_path(image)) or (0, 0))


def _clipped(ann: dict, h: int, w: int) -> Optional[list[float]]:
    """xyxy of ``ann`` clipped to a (h, w) image (not clipped when the size is unknown); None when empty."""
    x, y, bw, bh = (float(v) for v in ann["bbox"])
    x1, y1, x2, y2 = x, y, x + bw, y + bh
    if h > 0 and w > 0:
        x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(w)), min(y2, float(h))
    return [x1, y1, x2, y2] if x2 > x1 and y2 > y1 else None


def _by_image(raw: RawSplit) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {im["id"]: [] for im in raw.coco["images"]}
    for a in raw.coco["annotations"]:
        out[a["image_id"]].append(a)
    return out


def write_coco(out: Path, splits: dict[str, RawSplit], names: list[str], placer: Placer) -> dict[str, dict]:
    summary = {}
    for split, raw in splits.items():
        images, anns, names_below = [], [], relative_names(raw)
        for im in raw.coco["images"]:
            dst = placer.place(Path(raw.image_path(im)), out / split / names_below[im["id"]])
            h, w = _size(raw, im)
            images.append({"id": im["id"], "file_name": dst.relative_to(out / split).as_posix(), "height": h,
                           "width": w})
        for a in raw.coco["annotations"]:
            x, y, bw, bh = (float(v) for v in a["bbox"])
            if bw > 0 and bh > 0:
                keep = {k: a[k] for k in ("segmentation",) if k in a}
                anns.append({"id": len(anns) + 1, "image_id": a["image_id"], "category_id": a["category_id"],
                             "bbox": [x, y, bw, bh], "area": a.get("area") or bw * bh,
                             "iscrowd": int(a.get("iscrowd", 0)), **keep})
        (out / "annotations").mkdir(parents=True, exist_ok=True)
        (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            {"images": images, "annotations": anns,
             "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)]}))
        summary[split] = {"images": len(images), "boxes": len(anns),
                          "left_out": len(raw.coco["annotations"]) - len(anns)}
    return summary


def _placed_boxes(raw: RawSplit, folder: Path, placer: Placer, *, yolo: bool):
    """Each image of the split placed below ``folder``, as (its new path, h, w, [(annotation, clipped xyxy)]), and
    how many boxes were left out: empty once clipped, and for YOLO also crowd boxes and any box of an image of
    unknown size (its labels are fractions of the size)."""
    per_image, names_below = _by_image(raw), relative_names(raw)
    placed, left_out = [], 0
    for im in raw.coco["images"]:
        dst = placer.place(Path(raw.image_path(im)), folder / names_below[im["id"]])
        h, w = _size(raw, im)
        boxes = []
        for a in per_image[im["id"]]:
            usable = not yolo or (not a.get("iscrowd") and h > 0 and w > 0)
            box = _clipped(a, h, w) if usable else None
            if box is None:
                left_out += 1
            else:
                boxes.append((a, box))
        placed.append((dst, h, w, boxes))
    return placed, left_out


def _split_summary(placed: list, left_out: int) -> dict:
    return {"images": len(placed), "boxes": sum(len(boxes) for *_, boxes in placed), "left_out": left_out}


def write_yolo(out: Path, splits: dict[str, RawSplit], names: list[str], placer: Placer) -> dict[str, dict]:
    summary = {}
    for split, raw in splits.items():
        placed, left_out = _placed_boxes(raw, out / "images" / split, placer, yolo=True)
        for dst, h, w, boxes in placed:
            label = (out / "labels" / split / dst.relative_to(out / "images" / split)).with_suffix(".txt")
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("".join(f"{a['category_id'] - 1} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                                     f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}\n"
                                     for a, (x1, y1, x2, y2) in boxes))
        summary[split] = _split_summary(placed, left_out)
    data = {**{s: f"images/{s}" for s in splits}, "names": dict(enumerate(names))}
    (out / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return summary


def voc_xml_element(file_name: str, h: int, w: int, objects: list[tuple[str, list[float], bool]]) -> ET.Element:
    """A Pascal-VOC annotation: integer 1-based inclusive pixels (at least one pixel wide and high)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = file_name
    size = ET.SubElement(root, "size")
    for tag, value in (("width", w), ("height", h), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    for name, (x1, y1, x2, y2), difficult in objects:
        obj = ET.SubElement(root, "object")
        for tag, value in (("name", name), ("pose", "Unspecified"), ("truncated", "0"),
                           ("difficult", str(int(difficult)))):
            ET.SubElement(obj, tag).text = value
        box = ET.SubElement(obj, "bndbox")
        xmin, ymin = round(x1) + 1, round(y1) + 1
        for tag, value in (("xmin", xmin), ("ymin", ymin), ("xmax", max(round(x2), xmin)),
                           ("ymax", max(round(y2), ymin))):
            ET.SubElement(box, tag).text = str(value)
    ET.indent(root)
    return root


def write_voc_xml(out: Path, splits: dict[str, RawSplit], names: list[str], placer: Placer) -> dict[str, dict]:
    summary = {}
    for split, raw in splits.items():
        placed, left_out = _placed_boxes(raw, out / split, placer, yolo=False)
        for dst, h, w, boxes in placed:
            objects = [(names[a["category_id"] - 1], box, bool(a.get("iscrowd"))) for a, box in boxes]
            ET.ElementTree(voc_xml_element(dst.name, h, w, objects)).write(dst.with_suffix(".xml"), encoding="utf-8")
        summary[split] = _split_summary(placed, left_out)
    return summary


WRITERS: dict[str, Callable[[Path, dict, list, Placer], dict]] = {"coco": write_coco, "yolo": write_yolo,
                                                                   "voc_xml": write_voc_xml}


def training_opts(to: str, out: Path, splits: Sequence[str]) -> str:
    """The --opts that train on the converted set."""
    root = out / "data.yaml" if to == "yolo" else out
    train = next((s for s in splits if s.startswith("train")), splits[0])
    val = next((s for s in splits if s.startswith(("val", "valid"))), train)
    return (f"data.dataset={to} data.root={root} data.train_split={train} data.val_split={val} "
            f"model.num_classes=auto")
