"""Annotation tools' exports read into COCO form (:class:`data.dataset_base.RawSplit`), for
``tools/convert_dataset.py``: Label Studio (JSON-min, JSON, and its COCO export) and CVAT for images 1.1 (XML).

Images are looked up in ``image_dir`` by the path the export gives (CVAT: ``<image name>``, relative; Label
Studio: the task's image URL, whose file name is kept: ``/data/upload/3/1a2b3c4d-cat.jpg`` ->
``image_dir/1a2b3c4d-cat.jpg``, else ``image_dir/cat.jpg`` without Label Studio's 8-hex upload prefix).

* Label Studio boxes are percentages of ``original_width`` / ``original_height``, rotated by ``rotation``
  degrees (clockwise) about their top-left corner; a rotated box becomes the axis-aligned box around it.
  One annotation per task: JSON-min's, or in the JSON export the last one that was not cancelled. Classes:
  the sorted names found. A COCO export (a JSON object) is read as a COCO file.
* CVAT ``<box>`` elements are pixels (``xtl ytl xbr ybr``) rotated by ``rotation`` degrees about their centre;
  other shapes (polygons, points...) and video ``<track>`` elements are left out, counted in the issues.
  Classes: the labels of ``<meta>`` in their order, then any other name used.
"""
from __future__ import annotations

import json
import math
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from data.dataset_base import AnnotationFileNotFoundError, DatasetError, Issue, RawSplit, image_size

__all__ = ["read_labelstudio", "read_cvat", "rotated_bounds", "default_image_dir"]

_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")  # Label Studio prefixes uploaded files with 8 hex digits


def rotated_bounds(x: float, y: float, w: float, h: float, degrees: float, *, about_centre: bool) -> list[float]:
    """[x, y, w, h] of the axis-aligned box around box [x, y, w, h] turned clockwise (on screen: y points down)
    by ``degrees`` about its centre or its top-left corner."""
    if not degrees:
        return [x, y, w, h]
    t = math.radians(degrees)
    ox, oy = (x + w / 2, y + h / 2) if about_centre else (x, y)
    xs, ys = [], []
    for cx, cy in ((x, y), (x + w, y), (x + w, y + h), (x, y + h)):
        dx, dy = cx - ox, cy - oy
        xs.append(ox + dx * math.cos(t) - dy * math.sin(t))
        ys.append(oy + dx * math.sin(t) + dy * math.cos(t))
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def _load_json(path: Path):
    if not path.is_file():
        raise AnnotationFileNotFoundError(f"export file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path} is not valid JSON: {e}") from e


def _local_image(url: str, image_dir: Path) -> Path:
    """The file in ``image_dir`` of a Label Studio image URL (see the module docstring)."""
    parsed = urlparse(url)
    path = parse_qs(parsed.query).get("d", [parsed.path])[0]  # /data/local-files/?d=folder/a.jpg
    name = os.path.basename(unquote(path))
    for candidate in (name, _UPLOAD_PREFIX.sub("", name)):
        if (image_dir / candidate).is_file():
            return image_dir / candidate
    return image_dir / name


def _labelstudio_boxes(task: dict) -> list[dict]:
    """The rectangles of a task: JSON-min keeps them under the control's name (``label``...), JSON in
    ``annotations[-1].result`` (the last annotation not cancelled)."""
    if "annotations" in task and "data" in task:
        done = [a for a in task["annotations"] if not a.get("was_cancelled")]
        return [{**r["value"], **{key: r[key] for key in ("original_width", "original_height") if key in r}}
                for r in (done[-1]["result"] if done else []) if "rectanglelabels" in r.get("value", {})]
    return [r for v in task.values() if isinstance(v, list) for r in v if isinstance(r, dict) and "rectanglelabels" in r]


def read_labelstudio(path, image_dir) -> RawSplit:
    """A Label Studio export (see the module docstring) in COCO form; images looked up in ``image_dir``."""
    path, image_dir = Path(path), Path(image_dir)
    data = _load_json(path)
    if isinstance(data, dict):  # the COCO export
        if not {"images", "annotations", "categories"} <= set(data):
            raise DatasetError(f"{path}: a JSON object but not a COCO file (needs images, annotations, categories)")
        return RawSplit(data, image_dir)
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a list of tasks (JSON-min / JSON export) or a COCO object")
    if not all(isinstance(t, dict) for t in data):
        raise DatasetError(f"{path}: expected a list of Label Studio tasks (JSON objects)")
    tasks = [(k, t, _labelstudio_boxes(t)) for k, t in enumerate(data)]
    names = sorted({b["rectanglelabels"][0] for _, _, boxes in tasks for b in boxes if b["rectanglelabels"]})
    cat_ids = {n: i + 1 for i, n in enumerate(names)}
    raw = RawSplit({"images": [], "annotations": [], "categories": [{"id": i, "name": n} for n, i in cat_ids.items()]},
                   image_dir)
    for image_id, (k, task, boxes) in enumerate(tasks, start=1):
        url = (task.get("data") or task).get("image")
        if not isinstance(url, str):
            raise DatasetError(f"{path}: task #{k} has no image URL")
        image = _local_image(url, image_dir)
        sizes = [(b.get("original_height"), b.get("original_width")) for b in boxes if b.get("original_width")]
        h, w = sizes[0] if sizes else (image_size(image) or (0, 0))
        raw.coco["images"].append({"id": image_id, "file_name": os.path.relpath(image, image_dir), "height": h,
                                   "width": w})
        for b in boxes:
            if not b["rectanglelabels"]:
                continue
            bh, bw = b.get("original_height") or h, b.get("original_width") or w
            box = rotated_bounds(b["x"] * bw / 100, b["y"] * bh / 100, b["width"] * bw / 100, b["height"] * bh / 100,
                                 b.get("rotation", 0), about_centre=False)
            _append(raw, image_id, cat_ids[b["rectanglelabels"][0]], box, f"{path} task #{k}")
    return raw


def _append(raw: RawSplit, image_id: int, category_id: int, box: list[float], source: str) -> None:
    anns = raw.coco["annotations"]
    anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": category_id, "bbox": box,
                 "area": box[2] * box[3], "iscrowd": 0, "source": source})


def read_cvat(path, image_dir) -> RawSplit:
    """A CVAT for images 1.1 XML export in COCO form; images looked up in ``image_dir`` by their name."""
    path, image_dir = Path(path), Path(image_dir)
    if not path.is_file():
        raise AnnotationFileNotFoundError(f"export file not found: {path}")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DatasetError(f"{path} is not valid XML: {e}") from e
    if root.tag != "annotations":
        raise DatasetError(f"{path}: not a CVAT for images export (top element <{root.tag}>, not <annotations>)")
    names = [n.text.strip() for n in root.findall("./meta//labels/label/name") if n.text]
    used = sorted({b.get("label") for b in root.iter("box")} - set(names) - {None})
    cat_ids = {n: i + 1 for i, n in enumerate(dict.fromkeys(names + used))}
    raw = RawSplit({"images": [], "annotations": [], "categories": [{"id": i, "name": n} for n, i in cat_ids.items()]},
                   image_dir)
    if root.find("track") is not None:
        raw.issues.append(Issue("left_out", str(path), f"{len(root.findall('track'))} <track> element(s) (video "
                                                       f"annotation) left out: export 'CVAT for images'"))
    for k, im in enumerate(root.findall("image")):
        try:
            image_id, name = int(im.get("id", k)) + 1, im.get("name")
            h, w = int(im.get("height", 0)), int(im.get("width", 0))
        except ValueError as e:
            raise DatasetError(f"{path}: <image> #{k} has a malformed id, width or height: {e}") from e
        if not name:
            raise DatasetError(f"{path}: <image> #{k} has no name")
        raw.coco["images"].append({"id": image_id, "file_name": name, "height": h, "width": w})
        _cvat_boxes(im, raw, image_id, cat_ids, f"{path} image {name!r}")
    return raw


def _cvat_boxes(im: ET.Element, raw: RawSplit, image_id: int, cat_ids: dict[str, int], where: str) -> None:
    others = [el.tag for el in im if el.tag not in ("box", "tag")]
    if others:
        raw.issues.append(Issue("left_out", where, f"{len(others)} shape(s) that are not boxes left out: "
                                                   f"{sorted(set(others))}"))
    for j, b in enumerate(im.findall("box")):
        try:
            x1, y1, x2, y2 = (float(b.get(key)) for key in ("xtl", "ytl", "xbr", "ybr"))
            rotation = float(b.get("rotation", 0))
        except (TypeError, ValueError):
            raise DatasetError(f"{where}: <box> #{j} needs numbers xtl, ytl, xbr, ybr: {b.attrib}") from None
        box = rotated_bounds(x1, y1, x2 - x1, y2 - y1, rotation, about_centre=True)
        _append(raw, image_id, cat_ids[b.get("label")], box, f"{where} box #{j}")


def default_image_dir(export: Path) -> Path:
    """Where an export's images are unless told: ``images/`` beside it (CVAT's and Label Studio's zip
    layout), else its own folder."""
    return export.parent / "images" if (export.parent / "images").is_dir() else export.parent

