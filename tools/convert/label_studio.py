"""Label Studio exports read into COCO form (:class:`data.dataset_base.RawSplit`): JSON-min, JSON and its COCO
export.

Images are looked up in ``image_dir`` by the task's image URL, whose file name is kept:
``/data/upload/3/1a2b3c4d-cat.jpg`` -> ``image_dir/1a2b3c4d-cat.jpg``, else ``image_dir/cat.jpg`` without Label
Studio's 8-hex upload prefix.

Boxes are percentages of ``original_width`` / ``original_height``, rotated by ``rotation`` degrees (clockwise)
about their top-left corner; a rotated box becomes the axis-aligned box around it. One annotation per task:
JSON-min's, or in the JSON export the last one that was not cancelled. Classes: the sorted names found. A COCO
export (a JSON object) is read as a COCO file.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from data.dataset_base import DatasetError, RawSplit, image_size
from tools.convert.exports import append_box, load_json, rotated_bounds

__all__ = ["read_labelstudio"]

_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")  # Label Studio prefixes uploaded files with 8 hex digits


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
    return [r for v in task.values() if isinstance(v, list)
            for r in v if isinstance(r, dict) and "rectanglelabels" in r]


def read_labelstudio(path, image_dir) -> RawSplit:
    """A Label Studio export (see the module docstring) in COCO form; images looked up in ``image_dir``."""
    path, image_dir = Path(path), Path(image_dir)
    data = load_json(path)
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
            append_box(raw, image_id, cat_ids[b["rectanglelabels"][0]], box, f"{path} task #{k}")
    return raw
