"""The sources tools/convert_dataset.py reads, each into COCO form (:class:`data.dataset_base.RawSplit`) per split:
the datasets' own readers (yolo, voc_xml, coco) and the annotation tools' exports (labelstudio, cvat); and
:func:`unify_classes`, which numbers the classes of every split alike, and :func:`select_classes`, which keeps some
(``--classes``)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Sequence

from data.coco import load_coco_json
from data.dataset_base import DatasetError, RawSplit
from data.voc_xml import ANNOTATION_DIRS, class_names_in, read_voc_xml_split, split_xml_files
from data.yolo import read_data_yaml, read_yolo_split
from tools.convert.cvat import read_cvat
from tools.convert.exports import default_image_dir
from tools.convert.label_studio import read_labelstudio

__all__ = ["SOURCES", "unify_classes", "select_classes"]


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


def select_classes(splits: dict[str, RawSplit], spec: Sequence[str]) -> tuple[list[str], int]:
    """Keep the classes ``spec`` names, in its order: ``name``, or ``name=new_name`` to rename it; the boxes of every
    other class are left out. Categories renumbered 1..K in every split (after :func:`unify_classes`). Returns the
    class names and the number of boxes left out."""
    known = [str(c["name"]) for c in next(iter(splits.values())).coco["categories"]] if splits else []
    renamed: dict[str, str] = {}
    for item in spec:
        old, _, new = item.partition("=")
        if old not in known:
            raise DatasetError(f"--classes: {old!r} is not a class of the source (its classes: {', '.join(known)})")
        renamed[old] = new or old
    names = list(renamed.values())
    if len(set(names)) != len(names) or not all(names):
        raise DatasetError(f"--classes {' '.join(spec)}: the kept classes need distinct non-empty names")
    new_id = {old: k + 1 for k, old in enumerate(renamed)}
    left_out = 0
    for raw in splits.values():
        old_name = {c["id"]: str(c["name"]) for c in raw.coco["categories"]}
        anns = raw.coco["annotations"]
        kept = [{**a, "category_id": new_id[old_name[a["category_id"]]]} for a in anns
                if old_name[a["category_id"]] in new_id]
        left_out += len(anns) - len(kept)
        raw.coco["annotations"] = kept
        raw.coco["categories"] = [{"id": k + 1, "name": n} for k, n in enumerate(names)]
    return names, left_out
