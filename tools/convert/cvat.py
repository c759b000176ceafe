"""CVAT for images 1.1 (XML) exports read into COCO form (:class:`data.dataset_base.RawSplit`).

Images are looked up in ``image_dir`` by their ``<image name>`` (relative). ``<box>`` elements are pixels
(``xtl ytl xbr ybr``) rotated by ``rotation`` degrees about their centre; other shapes (polygons, points...) and
video ``<track>`` elements are left out, counted in the issues. Classes: the labels of ``<meta>`` in their
order, then any other name used.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from data.dataset_base import AnnotationFileNotFoundError, DatasetError, Issue, RawSplit
from tools.convert.exports import append_box, rotated_bounds

__all__ = ["read_cvat"]


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
        append_box(raw, image_id, cat_ids[b.get("label")], box, f"{where} box #{j}")
