"""YOLO-layout datasets (the ultralytics layout): a ``data.yaml``, ``images/`` and ``labels/*.txt``.

::

    my_data/data.yaml              path: .            # optional: the dataset root
    my_data/images/train/a.jpg     train: images/train
    my_data/labels/train/a.txt     val: images/val
    my_data/images/val/b.jpg       names: [cat, dog]  # or {0: cat, 1: dog}
    my_data/labels/val/b.txt

With ``data.dataset: yolo``, ``data.root`` is the path of the ``data.yaml`` and ``data.train_split`` /
``data.val_split`` are keys of it (``train``, ``val``, ``test``...).

* ``path``: the dataset root, relative to the data.yaml's folder; absent, that folder.
* A split's entry: a folder (its images, searched recursively), a ``.txt`` file listing one image path a line
  (relative to the list's folder, or absolute), or a list of these, relative to ``path``. As ultralytics does,
  an entry ``../x`` that does not exist is tried as ``x`` (Roboflow's exports write ``val: ../valid/images``).
* The label file of an image: its path with the last ``/images/`` replaced by ``/labels/`` and the suffix by
  ``.txt`` (ultralytics' rule). No label file, or an empty one: a background image; an image without a label
  file is a logged :class:`Issue` (``no_label_file``) naming where it was looked for, the usual sign of a
  misplaced ``labels/`` folder when it is every image of a split.
* A label line: ``class cx cy w h``, the box centre and size as fractions of the image's width and height;
  a polygon line (``class x1 y1 x2 y2 ...``, the segmentation layout) gives its bounding box. Blank lines are
  skipped.
* Classes: ``names`` (a list, or a dict with the keys 0..K-1). In the COCO form class k has category id k + 1.
* The boxes are turned into pixels with each image's real size, read from its header (EXIF orientation
  applied, as OpenCV decodes it).

Bad input: a malformed ``data.yaml`` or label line raises :class:`DatasetError` naming the file (and line); the
class ids outside ``names`` make one such error naming the first file and line. An image whose size cannot be
read keeps no boxes (a logged :class:`Issue`); the dataset skips it as it skips any unreadable image.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from data.coco import COCODetection
from data.dataset_base import (IMAGE_SUFFIXES, AnnotationFileNotFoundError, DatasetError, Issue, RawSplit,
                               image_size)

logger = logging.getLogger(__name__)

__all__ = ["DataYaml", "read_data_yaml", "split_images", "label_file", "read_yolo_split", "YOLODetection"]

_NOT_SPLITS = ("path", "names", "nc", "download")  # data.yaml keys that name no split


@dataclass(frozen=True)
class DataYaml:
    """A ``data.yaml``: its own path, the dataset root (``path``), the class names and each split's entry."""

    file: Path
    root: Path
    names: list[str]
    splits: dict[str, Any]


def _names(data: dict, file: Path) -> list[str]:
    names = data.get("names")
    if isinstance(names, dict):
        try:
            by_id = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise DatasetError(f"{file}: the keys of 'names' must be class ids 0, 1, ..., got {list(names)}") from None
        if sorted(by_id) != list(range(len(by_id))):
            raise DatasetError(f"{file}: the keys of 'names' must be 0..{len(by_id) - 1}, got {sorted(by_id)}")
        names = [by_id[k] for k in range(len(by_id))]
    elif names is None and isinstance(data.get("nc"), int):
        names = [f"class_{k}" for k in range(data["nc"])]
        logger.warning("%s has no 'names': the %d classes are called class_0 .. class_%d", file, len(names),
                       len(names) - 1)
    if not isinstance(names, list) or not names:
        raise DatasetError(f"{file}: 'names' must be a non-empty list of class names or a dict {{0: name, ...}}")
    if "nc" in data and data["nc"] != len(names):
        raise DatasetError(f"{file}: nc is {data['nc']} but 'names' lists {len(names)} classes")
    if len(set(map(str, names))) != len(names):
        raise DatasetError(f"{file}: 'names' lists a class twice: {names}")
    return [str(n) for n in names]


def read_data_yaml(path) -> DataYaml:
    """The ``data.yaml`` at ``path`` (see the module docstring)."""
    file = Path(path)
    if not file.is_file():
        raise AnnotationFileNotFoundError(f"YOLO data.yaml not found: {file} (with data.dataset=yolo, data.root "
                                          f"is the path of the data.yaml)")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise DatasetError(f"{file} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise DatasetError(f"{file}: expected a mapping with path, train, val and names")
    root = Path(data["path"]) if data.get("path") else Path(".")
    root = Path(os.path.abspath(root if root.is_absolute() else file.parent / root))
    splits = {k: v for k, v in data.items() if k not in _NOT_SPLITS and isinstance(v, (str, list))}
    return DataYaml(file, root, _names(data, file), splits)


def _entry_path(root: Path, entry: str) -> Path:
    path = Path(entry) if Path(entry).is_absolute() else root / entry
    if not path.exists() and entry.startswith("../") and (root / entry[3:]).exists():
        return root / entry[3:]  # ultralytics' fallback for Roboflow's "../train/images"
    return path


def _list_images(path: Path, dy: DataYaml) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if path.is_file() and path.suffix == ".txt":
        lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
        return [Path(os.path.abspath(path.parent / line)) for line in lines if line]  # an absolute line stays
    raise AnnotationFileNotFoundError(f"{dy.file}: {path} is neither a folder of images nor a .txt list of them")


def split_images(dy: DataYaml, split: str) -> list[Path]:
    """The image paths of ``split`` (a key of the data.yaml), in the order given (folders: sorted)."""
    if split not in dy.splits:
        raise DatasetError(f"{dy.file} has no split {split!r}; its splits: {', '.join(dy.splits) or 'none'} "
                           f"(data.train_split / data.val_split name keys of the data.yaml)")
    entries = dy.splits[split] if isinstance(dy.splits[split], list) else [dy.splits[split]]
    images = [im for entry in entries for im in _list_images(_entry_path(dy.root, str(entry)), dy)]
    if not images:
        raise DatasetError(f"{dy.file}: split {split!r} ({dy.splits[split]}) holds no images "
                           f"(suffixes {', '.join(IMAGE_SUFFIXES)})")
    return images


def label_file(image: Path) -> Path:
    """``.../images/.../a.jpg`` -> ``.../labels/.../a.txt`` (the last ``images`` folder of the path)."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return Path(sb.join(str(image).rsplit(sa, 1))).with_suffix(".txt")


def _parse_line(text: str, file: Path, line: int) -> tuple[float, list[float]]:
    """(class id as written, normalised [cx, cy, w, h]) of one label line."""
    try:
        values = [float(v) for v in text.split()]
    except ValueError:
        raise DatasetError(f"YOLO label file {file} line {line}: {text.strip()!r} is not a list of numbers") from None
    if not all(math.isfinite(v) for v in values):
        raise DatasetError(f"YOLO label file {file} line {line}: {text.strip()!r} holds a non-finite number")
    if len(values) == 5:
        return values[0], values[1:]
    if len(values) >= 7 and len(values) % 2 == 1:  # a polygon: its bounding box
        xs, ys = values[1::2], values[2::2]
        return values[0], [(min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)]
    raise DatasetError(f"YOLO label file {file} line {line}: expected 5 numbers (class cx cy w h) or a polygon "
                       f"(class x1 y1 x2 y2 ...), got {len(values)}")


def _read_labels(file: Path, names: list[str], hw: Optional[tuple[int, int]], image: Path, raw: RawSplit,
                 image_id: int) -> None:
    """Append the boxes of ``file`` (the labels of ``image``, of size ``hw``) to ``raw``."""
    lines = file.read_text(encoding="utf-8-sig").splitlines()  # a BOM is no number
    anns = raw.coco["annotations"]
    for n, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        cls, (cx, cy, w, h) = _parse_line(text, file, n)
        if cls != int(cls) or not 0 <= cls < len(names):
            raw.issues.append(Issue("label_outside_names", str(file), f"class id {cls:g} is outside the "
                                    f"{len(names)} names of the data.yaml (0..{len(names) - 1})", n))
            continue
        if hw is None:
            raw.issues.append(Issue("unreadable_image", str(image), f"its size cannot be read: the boxes of "
                                                                    f"{file} are left out"))
            return
        H, W = hw
        box = [(cx - w / 2) * W, (cy - h / 2) * H, w * W, h * H]
        anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": int(cls) + 1, "bbox": box,
                     "area": box[2] * box[3], "iscrowd": 0, "source": f"{file} line {n}"})


def read_yolo_split(data_yaml, split: str) -> RawSplit:
    """Split ``split`` of the dataset ``data_yaml`` as read (see the module docstring), in COCO form.

    Image ids are 1..N in the split's image order.
    """
    dy = read_data_yaml(data_yaml)
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(dy.names)]
    raw = RawSplit({"images": [], "annotations": [], "categories": categories}, dy.root)
    for image_id, image in enumerate(split_images(dy, split), start=1):
        hw = image_size(image)
        name = os.path.relpath(image, dy.root) if image.is_relative_to(dy.root) else os.path.abspath(image)
        raw.coco["images"].append({"id": image_id, "file_name": name, "height": hw[0] if hw else 0,
                                   "width": hw[1] if hw else 0})
        labels = label_file(image)
        if labels.is_file():
            _read_labels(labels, dy.names, hw, image, raw, image_id)
        else:
            raw.issues.append(Issue("no_label_file", str(image), f"no label file {labels} (a background image)"))
    return raw


class YOLODetection(COCODetection):
    """Split ``split`` of the YOLO-layout dataset ``data_yaml``, read into COCO form and served as
    :class:`data.coco.COCODetection` serves a json: same records, clipping, ``filter_empty``, and ``coco``
    (the in-memory ground truth the COCO evaluator scores)."""

    def __init__(self, data_yaml, split: str, transforms: Optional[Callable] = None, input_format: str = "BGR",
                 filter_empty: bool = True, max_skip_fraction: float = 0.01):
        self.data_yaml, self.split = Path(data_yaml), split
        self._raw: Optional[RawSplit] = read_yolo_split(self.data_yaml, split)
        self._raw.raise_for_labels_outside_names()
        self._raw.log_issues(self._describe())
        super().__init__(self._raw.image_dir, self.data_yaml, transforms, input_format, filter_empty,
                         max_skip_fraction)
        self._raw = None  # the COCO index holds the dict now

    def _load_annotations(self) -> dict:
        return (self._raw or read_yolo_split(self.data_yaml, self.split)).coco

    def _describe(self) -> str:
        return f"YOLO dataset {self.data_yaml} split {self.split!r}"

    def __repr__(self) -> str:
        return (f"YOLODetection(data_yaml={str(self.data_yaml)!r}, split={self.split!r}, images={len(self)}, "
                f"classes={len(self.class_names)}, filter_empty={self.filter_empty})")
