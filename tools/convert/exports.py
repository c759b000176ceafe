"""What the annotation tools' exports share (:mod:`tools.convert.label_studio`, :mod:`tools.convert.cvat`): the
axis-aligned bounds of a rotated box, reading a JSON export, appending a box to a split, and where an export's
images are unless told."""
from __future__ import annotations

import json
import math
from pathlib import Path

from data.dataset_base import AnnotationFileNotFoundError, DatasetError, RawSplit

__all__ = ["rotated_bounds", "load_json", "append_box", "default_image_dir"]


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


def load_json(path: Path):
    if not path.is_file():
        raise AnnotationFileNotFoundError(f"export file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path} is not valid JSON: {e}") from e


def append_box(raw: RawSplit, image_id: int, category_id: int, box: list[float], source: str) -> None:
    anns = raw.coco["annotations"]
    anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": category_id, "bbox": box,
                 "area": box[2] * box[3], "iscrowd": 0, "source": source})


def default_image_dir(export: Path) -> Path:
    """Where an export's images are unless told: ``images/`` beside it (CVAT's and Label Studio's zip
    layout), else its own folder."""
    return export.parent / "images" if (export.parent / "images").is_dir() else export.parent

