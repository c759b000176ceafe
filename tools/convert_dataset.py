"""Convert a detection dataset between layouts: YOLO, VOC XML and COCO, and from Label Studio and CVAT exports.

    python -m tools.convert_dataset --from yolo --to coco my_yolo/data.yaml my_coco
    python -m tools.convert_dataset --from coco --to yolo tests/assets my_yolo --split val2017
    python -m tools.convert_dataset --from voc_xml --to coco my_xml_folder my_coco --copy
    python -m tools.convert_dataset --from labelstudio --to coco project-1.json my_coco --image_dir media/upload/1
    python -m tools.convert_dataset --from cvat --to voc_xml annotations.xml my_xml_folder

SRC, by ``--from`` (``--split`` picks splits; a source of one split is named by ``--split``, default train):

* ``yolo``: a ``data.yaml`` (:mod:`data.yolo`); every split key it has.
* ``voc_xml``: a folder (:mod:`data.voc_xml`); every sub-folder holding XML files is a split, or the folder
  itself is one when none is (``Annotations/`` and the like are not splits).
* ``coco``: a COCO root (every ``annotations/instances_<split>.json``, images in ``<split>/``) or one json
  (images in ``--image_dir``, else ``<root>/<split>/`` beside its ``annotations/`` folder, else its folder).
* ``labelstudio``: a Label Studio JSON-min, JSON or COCO export; ``cvat``: a CVAT for images 1.1 XML
  (:mod:`data.tool_exports`); images in ``--image_dir``, else ``images/`` beside the export, else its folder.

OUT, by ``--to`` (it must be empty or new), and the ``--opts`` to train on it (printed at the end):

* ``coco``: ``OUT/annotations/instances_<split>.json``, images in ``OUT/<split>/``.
* ``yolo``: ``OUT/data.yaml`` (no ``path``: the yaml's own folder, for ultralytics too), images in
  ``OUT/images/<split>/``, labels in ``OUT/labels/<split>/`` (an empty file for an image without boxes).
* ``voc_xml``: ``OUT/<split>/``, each image beside its XML file.

Images are symbolic links to the source's unless ``--copy``. COCO gets the boxes as read; YOLO and VOC XML get
them clipped to the image (ultralytics rejects a label file with coordinates outside [0, 1]). Zero-area boxes
are left out of all three. Crowd regions (COCO ``iscrowd``) become VOC ``difficult`` objects and are left out
of YOLO, which has no such thing. VOC XML holds integer pixels (1-based, inclusive: ``xmin = round(x1) + 1``,
``xmax = round(x2)``): within 0.5 px. YOLO holds 6 decimals. Classes: the union of the splits' class lists, in
order, so that every split numbers them alike (YOLO class k is COCO category k + 1).

Hand-written rather than with ``supervision`` or ``globox`` (measured in docs/your_own_data.md): the readers are
the datasets' own (a converted set reads back exactly as training reads the source), and what is left, the
three writers, is a few lines each.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Optional, Sequence

import yaml

if __package__ in (None, ""):  # python tools/<name>.py: the repository root on sys.path (tools/_bootstrap.py)
    import _bootstrap  # noqa: F401

from data.coco import load_coco_json
from data.dataset_base import DatasetError, RawSplit, image_size
from data.tool_exports import default_image_dir, read_cvat, read_labelstudio
from data.voc_xml import ANNOTATION_DIRS, class_names_in, read_voc_xml_split, split_xml_files
from data.yolo import read_data_yaml, read_yolo_split
from utils.script import run_script, setup_logging
from utils.errors import UserError

logger = logging.getLogger("convert_dataset")


# ------------------------------------------------------------------------------------------------ reading
def _one_split(args) -> str:
    return args.split[0] if args.split else "train"


def _read_yolo(src: Path, args) -> dict[str, RawSplit]:
    splits = args.split or list(read_data_yaml(src).splits)
    return {s: read_yolo_split(src, s) for s in splits}


def _read_voc_xml(src: Path, args) -> dict[str, RawSplit]:
    if args.split:
        folders = {s: s for s in args.split}
    else:
        subs = sorted(d.name for d in src.iterdir() if d.is_dir() and d.name not in ANNOTATION_DIRS
                      and next(d.rglob("*.xml"), None) is not None)
        folders = {s: s for s in subs} or {"train": "."}
    names = sorted({n for f in folders.values() for n in class_names_in(split_xml_files(src, f))})
    return {s: read_voc_xml_split(src, f, names) for s, f in folders.items()}


def _coco_image_dir(ann: Path, split: str, args) -> Path:
    if args.image_dir:
        return Path(args.image_dir)
    beside = ann.parent.parent / split
    return beside if ann.parent.name == "annotations" and beside.is_dir() else ann.parent


def _read_coco(src: Path, args) -> dict[str, RawSplit]:
    if src.is_dir():
        files = {p.stem.removeprefix("instances_"): p for p in sorted((src / "annotations").glob("instances_*.json"))}
        missing = sorted(set(args.split or []) - set(files))
        if not files or missing:
            raise DatasetError(f"{src}: no annotations/instances_<split>.json for {missing or 'any split'} "
                               f"(found: {', '.join(files) or 'none'})")
        files = {s: files[s] for s in args.split} if args.split else files
    else:
        name = src.stem.removeprefix("instances_") if src.stem.startswith("instances_") else _one_split(args)
        files = {name: src}
    return {s: RawSplit(load_coco_json(f), _coco_image_dir(f, s, args)) for s, f in files.items()}


def _read_export(reader: Callable) -> Callable:
    def read(src: Path, args) -> dict[str, RawSplit]:
        return {_one_split(args): reader(src, Path(args.image_dir) if args.image_dir else default_image_dir(src))}

    return read


SOURCES: dict[str, Callable[[Path, argparse.Namespace], dict[str, RawSplit]]] = {
    "yolo": _read_yolo, "voc_xml": _read_voc_xml, "coco": _read_coco,
    "labelstudio": _read_export(read_labelstudio), "cvat": _read_export(read_cvat)}


def unify_classes(splits: dict[str, RawSplit]) -> list[str]:
    """The union of the splits' class names in order; every split's categories renumbered 1..K alike."""
    names: list[str] = []
    for raw in splits.values():
        raw.raise_for_labels_outside_names()
        names += [str(c["name"]) for c in raw.coco["categories"] if str(c["name"]) not in names]
    new_id = {n: k + 1 for k, n in enumerate(names)}
    for split, raw in splits.items():
        old = {c["id"]: new_id[str(c["name"])] for c in raw.coco["categories"]}
        for a in raw.coco["annotations"]:
            if a["category_id"] not in old:
                raise DatasetError(f"split {split!r}: annotation id {a['id']} has category id {a['category_id']}, "
                                   f"which is not in its categories")
            a["category_id"] = old[a["category_id"]]
        raw.coco["categories"] = [{"id": k, "name": n} for n, k in new_id.items()]
    return names


# ------------------------------------------------------------------------------------------------ writing
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
            {"images": images, "annotations": anns, "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)]}))
        summary[split] = {"images": len(images), "boxes": len(anns), "left_out": len(raw.coco["annotations"]) - len(anns)}
    return summary


def write_yolo(out: Path, splits: dict[str, RawSplit], names: list[str], placer: Placer) -> dict[str, dict]:
    summary = {}
    for split, raw in splits.items():
        written = left_out = 0
        per_image, names_below = _by_image(raw), relative_names(raw)
        for im in raw.coco["images"]:
            dst = placer.place(Path(raw.image_path(im)), out / "images" / split / names_below[im["id"]])
            h, w = _size(raw, im)
            lines = []
            for a in per_image[im["id"]]:
                box = None if a.get("iscrowd") or not (h > 0 and w > 0) else _clipped(a, h, w)
                if box is None:
                    left_out += 1
                    continue
                x1, y1, x2, y2 = box
                lines.append(f"{a['category_id'] - 1} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                             f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
            label = (out / "labels" / split / dst.relative_to(out / "images" / split)).with_suffix(".txt")
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("".join(line + "\n" for line in lines))
            written += len(lines)
        summary[split] = {"images": len(raw.coco["images"]), "boxes": written, "left_out": left_out}
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
        for tag, value in (("name", name), ("pose", "Unspecified"), ("truncated", "0"), ("difficult", str(int(difficult)))):
            ET.SubElement(obj, tag).text = value
        box = ET.SubElement(obj, "bndbox")
        xmin, ymin = round(x1) + 1, round(y1) + 1
        for tag, value in (("xmin", xmin), ("ymin", ymin), ("xmax", max(round(x2), xmin)), ("ymax", max(round(y2), ymin))):
            ET.SubElement(box, tag).text = str(value)
    ET.indent(root)
    return root


def write_voc_xml(out: Path, splits: dict[str, RawSplit], names: list[str], placer: Placer) -> dict[str, dict]:
    summary = {}
    for split, raw in splits.items():
        written = left_out = 0
        per_image, names_below = _by_image(raw), relative_names(raw)
        for im in raw.coco["images"]:
            dst = placer.place(Path(raw.image_path(im)), out / split / names_below[im["id"]])
            h, w = _size(raw, im)
            objects = []
            for a in per_image[im["id"]]:
                box = _clipped(a, h, w)
                if box is None:
                    left_out += 1
                    continue
                objects.append((names[a["category_id"] - 1], box, bool(a.get("iscrowd"))))
            ET.ElementTree(voc_xml_element(dst.name, h, w, objects)).write(dst.with_suffix(".xml"), encoding="utf-8")
            written += len(objects)
        summary[split] = {"images": len(raw.coco["images"]), "boxes": written, "left_out": left_out}
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


def convert(src: Path, out: Path, source: str, target: str, args) -> dict[str, dict]:
    """Read ``src`` (a ``source`` layout), write ``out`` (a ``target`` layout); the per-split summary."""
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty: convert into a new or empty folder")
    splits = SOURCES[source](src, args)
    names = unify_classes(splits)
    out.mkdir(parents=True, exist_ok=True)
    placer = Placer(copy=args.copy)
    summary = WRITERS[target](out, splits, names, placer)
    for split, raw in splits.items():
        raw.log_issues(f"{source} {src} split {split!r}")
    if placer.missing:
        logger.warning("%d image(s) not found, not %s (e.g. %s)", len(placer.missing),
                       "copied" if args.copy else "linked", placer.missing[:3])
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.convert_dataset", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--from", dest="source", required=True, choices=list(SOURCES))
    p.add_argument("--to", dest="target", required=True, choices=list(WRITERS))
    p.add_argument("src", type=Path, help="the source dataset (see above)")
    p.add_argument("out", type=Path, help="the folder to write (new or empty)")
    p.add_argument("--split", action="append", default=None,
                   help="a split to convert (repeatable; default: all); names a source of one split")
    p.add_argument("--image_dir", default=None, help="the images of a COCO json or a Label Studio / CVAT export")
    p.add_argument("--copy", action="store_true", help="copy the images (default: symbolic links)")
    args = p.parse_args(argv)
    setup_logging()
    summary = convert(args.src, args.out, args.source, args.target, args)
    for split, s in summary.items():
        print(f"{split}: {s['images']} images, {s['boxes']} boxes written, {s['left_out']} left out "
              f"(zero-area{', crowd' if args.target == 'yolo' else ''} or outside the image)")
    print(f"wrote {args.out}; train on it with: --opts {training_opts(args.target, args.out, list(summary))}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
