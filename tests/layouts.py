"""The test images of ``tests/assets`` written in other layouts, by hand (not by the code under test), for the
dataset-layout and dataset-tool tests: a YOLO set (``data.yaml``, ``images/``, ``labels/``) and a folder of VOC
XML files. Images are symbolic links to the assets. Crowd boxes have no YOLO form (left out) and are VOC
``difficult`` objects."""
from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from tests.conftest import COCO_JSON, COCO_SPLIT, COCO_TINY

IMAGES = COCO_TINY / COCO_SPLIT


def coco_gt() -> dict:
    return json.loads(COCO_JSON.read_text())


def coco_names() -> list[str]:
    """The 80 class names in COCO category-id order (the label order of every reader)."""
    return [c["name"] for c in sorted(coco_gt()["categories"], key=lambda c: c["id"])]


def expected_boxes(include_crowd: bool = False) -> dict[str, list[tuple[str, list[float]]]]:
    """File name -> [(class name, xyxy clipped to the image)] of the json, in annotation order."""
    gt = coco_gt()
    images = {im["id"]: im for im in gt["images"]}
    names = {c["id"]: c["name"] for c in gt["categories"]}
    out: dict[str, list] = {im["file_name"]: [] for im in gt["images"]}
    for a in gt["annotations"]:
        if a["iscrowd"] and not include_crowd:
            continue
        im = images[a["image_id"]]
        x, y, w, h = a["bbox"]
        box = [max(x, 0), max(y, 0), min(x + w, im["width"]), min(y + h, im["height"])]
        out[im["file_name"]].append((names[a["category_id"]], box))
    return out


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)


def yolo_lines(image: dict, anns: list[dict], class_ids: dict[int, int]) -> list[str]:
    """``class cx cy w h`` lines (6 decimals) of the non-crowd annotations of ``image``."""
    W, H = image["width"], image["height"]
    lines = []
    for a in anns:
        if a["iscrowd"]:
            continue
        x, y, w, h = a["bbox"]
        lines.append(f"{class_ids[a['category_id']]} {(x + w / 2) / W:.6f} {(y + h / 2) / H:.6f} "
                     f"{w / W:.6f} {h / H:.6f}")
    return lines


def write_yolo_set(root: Path, *, names_as_dict: bool = False, splits=("train", "val")) -> Path:
    """``root/data.yaml`` with every split holding the seven images (``images/<split>/``, ``labels/<split>/``,
    each label file ending with a blank line); returns the data.yaml."""
    gt = coco_gt()
    cat_ids = sorted(c["id"] for c in gt["categories"])
    class_ids = {cid: k for k, cid in enumerate(cat_ids)}
    for split in splits:
        for im in gt["images"]:
            _link(IMAGES / im["file_name"], root / "images" / split / im["file_name"])
            anns = [a for a in gt["annotations"] if a["image_id"] == im["id"]]
            label = root / "labels" / split / (Path(im["file_name"]).stem + ".txt")
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("\n".join(yolo_lines(im, anns, class_ids)) + "\n\n")
    names = coco_names()
    data = {"path": ".", **{s: f"images/{s}" for s in splits},
            "names": dict(enumerate(names)) if names_as_dict else names}
    (root / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root / "data.yaml"


def voc_xml(image: dict, anns: list[dict], names: dict[int, str]) -> str:
    """A Pascal-VOC XML of ``image``: 1-based inclusive integer pixels, crowd boxes as difficult objects."""
    objects = []
    for a in anns:
        x, y, w, h = a["bbox"]
        xmin, ymin = round(x) + 1, round(y) + 1
        xmax, ymax = max(round(x + w), xmin), max(round(y + h), ymin)
        objects.append(f"<object><name>{names[a['category_id']]}</name><pose>Unspecified</pose>"
                       f"<truncated>0</truncated><difficult>{int(a['iscrowd'])}</difficult>"
                       f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax>"
                       f"</bndbox></object>")
    return (f"<annotation><folder>images</folder><filename>{image['file_name']}</filename>"
            f"<size><width>{image['width']}</width><height>{image['height']}</height><depth>3</depth></size>"
            f"{''.join(objects)}</annotation>")


def write_voc_xml_set(root: Path, *, parallel: bool = False, splits=("train", "val")) -> Path:
    """Every split a folder ``root/<split>/`` of XML files beside their images (``parallel``: XML files in
    ``root/<split>/Annotations/``, images in ``root/<split>/JPEGImages/``); returns ``root``."""
    gt = coco_gt()
    names = {c["id"]: c["name"] for c in gt["categories"]}
    for split in splits:
        xml_dir = root / split / "Annotations" if parallel else root / split
        image_dir = root / split / "JPEGImages" if parallel else root / split
        for im in gt["images"]:
            _link(IMAGES / im["file_name"], image_dir / im["file_name"])
            anns = [a for a in gt["annotations"] if a["image_id"] == im["id"]]
            xml_dir.mkdir(parents=True, exist_ok=True)
            (xml_dir / (Path(im["file_name"]).stem + ".xml")).write_text(voc_xml(im, anns, names))
    return root
