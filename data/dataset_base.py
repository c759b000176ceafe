"""The dataset machinery shared by the COCO and VOC readers: packed records, image decoding with logged skips,
the dataset errors, and the augmentation RNG; and what the readers of the folder layouts share: image sizes
from the headers (:func:`image_size`) and a split's annotations as read, in COCO form (:class:`RawSplit`,
with the :class:`Issue` s met).

Output of ``dataset[i]`` is ``(image, target)``:

* ``image``: torch ``uint8`` tensor (3, H, W) in ``input_format`` channel order
  ("BGR" as decoded by OpenCV, or "RGB"). No mean/std normalisation: the model
  normalises.
* ``target`` dict: ``boxes`` float32 (N, 4) XYXY absolute pixels of the
  transformed image; ``labels`` int64 (N,) contiguous 0..K-1; ``image_id``;
  ``orig_size`` int64 (2,) = (h, w) as decoded; ``size`` int64 (2,) = (h, w)
  after transforms; ``file_name`` (str path); ``crowd_boxes`` float32 (M, 4).

An image that cannot be read at ``__getitem__`` time (training) is logged, counted and
replaced by the next readable sample; too many of them raise
:class:`UnreadableImagesError`. Evaluation reads with :meth:`DetectionDatasetBase.evaluation_sample`,
which never replaces an image: an unreadable one comes back as ``(None, target)`` with the reason in
``target["unreadable"]`` (the evaluator leaves it out of the ground truth: docs/evaluation.md).
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from utils.errors import UserError

logger = logging.getLogger(__name__)


__all__ = ["DetectionDatasetBase", "AnnotationFileNotFoundError", "DatasetError", "UnreadableImagesError",
           "IMAGE_SUFFIXES", "Issue", "RawSplit", "image_size"]

# the image files the folder-based layouts (yolo, voc_xml) pick up, compared in lower case
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_EXIF_ORIENTATION = 0x0112  # values 5..8 turn the picture by 90 degrees: height and width swap


def image_size(path) -> Optional[tuple[int, int]]:
    """(height, width) of an image as ``cv2.imread`` decodes it (EXIF orientation applied), from its header only
    (PIL reads no pixels: about 0.2 ms an image against 3 ms for a decode); None when it cannot be read."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            turned = im.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):  # missing, not an image, damaged
        return None
    return (w, h) if turned else (h, w)


@dataclass(frozen=True)
class Issue:
    """A problem met reading annotations that does not stop the reading: the file (and line) and what is wrong.

    ``kind``: ``label_outside_names`` (a class the class list lacks: the box is left out, and a dataset built on
    it refuses to load), ``unreadable_image`` (its size cannot be read, so its normalised boxes are left out),
    ``image_not_found`` (no image beside or parallel to an annotation file), ``left_out`` (shapes an export
    holds that are not boxes), ``no_label_file`` (a YOLO image without its label file: where it was looked for).
    """

    kind: str
    file: str
    detail: str
    line: Optional[int] = None

    def __str__(self) -> str:
        return f"{self.file}{f' line {self.line}' if self.line is not None else ''}: {self.detail}"


@dataclass
class RawSplit:
    """One split's annotations as read, before any cleaning, in COCO form: ``coco`` is a COCO dict (``images``
    with ``file_name`` relative to ``image_dir`` or absolute, ``height``, ``width``; ``annotations`` with
    ``bbox`` [x, y, w, h] in pixels as annotated, zero-area and out-of-image boxes included, ``area``,
    ``iscrowd`` and, for the layouts that have them, ``source``: the file and line a box comes from;
    ``categories``), and the :class:`Issue` s met."""

    coco: dict
    image_dir: Path
    issues: list[Issue] = field(default_factory=list)

    def image_path(self, image: dict) -> str:
        return os.path.join(str(self.image_dir), image["file_name"])

    def raise_for_labels_outside_names(self) -> None:
        """One :class:`DatasetError` naming the first box whose class the class list lacks (and how many more)."""
        bad = [i for i in self.issues if i.kind == "label_outside_names"]
        if bad:
            more = f" ({len(bad) - 1} more such box(es), e.g. {'; '.join(map(str, bad[1:4]))})" if len(bad) > 1 else ""
            raise DatasetError(f"{bad[0]}{more}")

    def log_issues(self, name: str) -> None:
        """One warning per kind of issue, with the first few files."""
        kinds: dict[str, list[Issue]] = {}
        for issue in self.issues:
            kinds.setdefault(issue.kind, []).append(issue)
        for kind, found in kinds.items():
            logger.warning("%s: %d %s issue(s), e.g. %s", name, len(found), kind, "; ".join(map(str, found[:3])))


class DatasetError(UserError, ValueError):
    """An annotation file or data folder is malformed or missing; the message names the file and the problem."""


class AnnotationFileNotFoundError(FileNotFoundError, DatasetError):
    """A required annotation / image-set file does not exist.

    Subclasses both FileNotFoundError and ValueError so either can be caught.
    """


class UnreadableImagesError(UserError, RuntimeError):
    """Too many images of a dataset cannot be read (a wrong image folder or damaged data)."""


# ============================================================================ shared base
class DetectionDatasetBase(Dataset):
    """Common machinery: packed per-image records, image decoding, bad-image skipping, rng.

    Subclasses call :meth:`_pack_records` with a list of per-image dicts holding
    ``file_name`` (full path), ``image_id``, ``height``/``width`` (-1 if unknown),
    ``boxes`` (N,4) float64, ``labels`` (N,) int64, optional extra per-box arrays
    named in ``per_box_extra`` and ``crowd_boxes`` (M,4).

    Records are stored as a few flat numpy arrays (not a list of Python dicts) so
    that forked DataLoader workers do not slowly copy the whole annotation set
    through reference-count writes.

    Randomness: one mechanism, :meth:`set_rng`. In training, :class:`data.build.SeededDataset` hands every
    sample its own ``numpy.random.Generator``, seeded from (run seed, epoch, position) by the sampler, so
    augmentation does not depend on the number of workers and is identical after ``--resume``. The bad-image
    counter is per process (each worker counts its own).
    """

    per_box_extra: tuple[str, ...] = ()

    def __init__(self, transforms: Optional[Callable] = None, input_format: str = "BGR",
                 max_skip_fraction: float = 0.01):
        super().__init__()
        if input_format not in ("BGR", "RGB"):
            raise ValueError(f"input_format must be 'BGR' or 'RGB', got {input_format!r}")
        if not 0.0 <= max_skip_fraction <= 1.0:
            raise ValueError(f"max_skip_fraction must be in [0, 1], got {max_skip_fraction}")
        self.transforms = transforms
        self.input_format = input_format
        self.max_skip_fraction = float(max_skip_fraction)
        self._rng: Optional[np.random.Generator] = None
        self._bad: dict[int, str] = {}
        self._size_warned: set[int] = set()
        self._image_cache: Optional[dict[int, np.ndarray]] = None

    # ------------------------------------------------------------------ records
    def _pack_records(self, records: Sequence[dict], id_is_int: bool) -> None:
        n = len(records)
        self._file_names = (np.array([r["file_name"] for r in records], dtype=np.str_) if n
                            else np.array([], dtype=np.str_))
        if id_is_int:
            self._image_ids = np.array([r["image_id"] for r in records], dtype=np.int64)
        else:
            self._image_ids = (np.array([r["image_id"] for r in records], dtype=np.str_) if n
                               else np.array([], dtype=np.str_))
        self._hw = np.array([[r.get("height", -1), r.get("width", -1)] for r in records], dtype=np.int64).reshape(n, 2)

        def offsets(counts):
            return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

        self._box_start = offsets([len(r["boxes"]) for r in records])
        self._crowd_start = offsets([len(r["crowd_boxes"]) for r in records])

        def cat(key, shape, dtype):
            arrs = [np.asarray(r[key], dtype=dtype).reshape(shape) for r in records]
            return np.concatenate(arrs) if arrs else np.zeros((0,) + shape[1:], dtype)

        self._boxes = cat("boxes", (-1, 4), np.float64)
        self._labels = cat("labels", (-1,), np.int64)
        self._crowd = cat("crowd_boxes", (-1, 4), np.float64)
        self._extra = {k: cat(k, (-1,), np.asarray(records[0][k]).dtype if n else np.bool_)
                       for k in self.per_box_extra}

    def __len__(self) -> int:
        return len(self._file_names)

    @property
    def image_sizes(self) -> np.ndarray:
        """(N, 2) int64 (height, width) of every image, from the annotations (-1 where they give none)."""
        return self._hw

    def _image_id(self, i: int):
        v = self._image_ids[i]
        return int(v) if self._image_ids.dtype.kind == "i" else str(v)

    def get_file_name(self, i: int) -> str:
        return str(self._file_names[i])

    def get_annotation(self, i: int) -> dict:
        """Untransformed numpy annotation of image i (boxes in the json/xml image frame)."""
        s, e = self._box_start[i], self._box_start[i + 1]
        cs, ce = self._crowd_start[i], self._crowd_start[i + 1]
        target = {"boxes": self._boxes[s:e].copy(), "labels": self._labels[s:e].copy()}
        for k, arr in self._extra.items():
            target[k] = arr[s:e].copy()
        target["crowd_boxes"] = self._crowd[cs:ce].copy()
        return target

    # ------------------------------------------------------------------ rng
    def set_rng(self, rng: Any) -> None:
        """The generator the next samples are augmented with: the one way randomness reaches a dataset. Training
        sets one per sample (:class:`data.build.SeededDataset`: ``default_rng(seed)`` of the sample's (run seed,
        epoch, position)), the tools one per drawn picture; a dataset nobody seeds uses ``default_rng(0)``."""
        self._rng = rng

    @property
    def rng(self):
        if self._rng is None:
            self._rng = np.random.default_rng(0)
        return self._rng

    # ------------------------------------------------------------------ images
    @property
    def skip_limit(self) -> int:
        return max(10, int(math.floor(self.max_skip_fraction * len(self))))

    @property
    def num_skipped(self) -> int:
        """Number of distinct unreadable images met so far in this process."""
        return len(self._bad)

    @staticmethod
    def read_image(path: str) -> tuple[Optional[np.ndarray], str]:
        """Decode with ``cv2.imread(path, cv2.IMREAD_COLOR)`` -> (HWC uint8 BGR or None, reason)."""
        if not os.path.exists(path):
            return None, "file does not exist"
        try:
            image = cv2.imread(path, cv2.IMREAD_COLOR)
        except cv2.error as e:  # pragma: no cover - cv2 normally returns None
            return None, f"OpenCV error: {e}"
        if image is None:
            return None, "file is unreadable or corrupt (OpenCV could not decode it)"
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
            return None, f"decoded to an unexpected shape {image.shape}"
        if logger.isEnabledFor(logging.DEBUG):
            raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
            if raw is not None and (raw.ndim == 2 or raw.shape[2] != 3):
                ch = 1 if raw.ndim == 2 else raw.shape[2]
                logger.debug("%s has %d channel(s); converted to 3-channel BGR by cv2.IMREAD_COLOR", path, ch)
        return image, ""

    def keep_images_in_memory(self) -> None:
        """Keep every decoded image (uint8 HWC) after its first read (``data.cache_images``): later epochs skip the
        decode. Memory: h x w x 3 bytes an image, in each process that reads (a loader worker caches its own)."""
        if self._image_cache is None:
            self._image_cache = {}

    def decoded_image(self, i: int) -> tuple[Optional[np.ndarray], str]:
        """Image ``i`` decoded (a private copy when it comes from the cache: transforms may write into it)."""
        cache = self._image_cache
        if cache is not None and i in cache:
            return cache[i].copy(), ""
        image, reason = self.read_image(self.get_file_name(i))
        if cache is not None and image is not None:
            cache[i] = image.copy()
        return image, reason

    def _register_bad(self, i: int, path: str, reason: str, *,
                      instead: str = "returning another sample instead") -> None:
        self._bad[i] = reason
        count = len(self._bad)
        limit = self.skip_limit
        logger.warning("%s: skipping image %s (index %d): %s; %s (%d unreadable image(s) so far in this process, "
                       "limit %d)", type(self).__name__, path, i, reason, instead, count, limit)
        if count > limit:
            examples = "; ".join(f"{self.get_file_name(j)}: {r}" for j, r in list(self._bad.items())[:5])
            raise UnreadableImagesError(
                f"{type(self).__name__}: {count} images could not be read, more than the allowed "
                f"max(10, max_skip_fraction={self.max_skip_fraction} * {len(self)} images) = {limit}. "
                f"The image folder or the annotation file is probably wrong or the data is damaged. "
                f"Examples: {examples}")

    def _to_tensor(self, image: np.ndarray) -> torch.Tensor:
        if self.input_format == "RGB":
            image = image[:, :, ::-1]
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))

    # ------------------------------------------------------------------ getitem
    def __getitem__(self, idx: int):
        idx = int(idx)
        n = len(self)
        if n == 0:
            raise IndexError("dataset is empty")
        if idx < 0:
            idx += n
        if not 0 <= idx < n:
            raise IndexError(f"index {idx} out of range for dataset of length {n}")
        for attempt in range(n):
            i = (idx + attempt) % n
            if i in self._bad:
                continue
            image, reason = self.decoded_image(i)
            if image is None:
                self._register_bad(i, self.get_file_name(i), reason)
                continue
            return self._make_sample(i, image)
        raise UnreadableImagesError(f"{type(self).__name__}: none of the {n} images could be read "
                           f"(e.g. {self.get_file_name(idx)}: {self._bad.get(idx)})")

    def evaluation_sample(self, idx: int):
        """Sample ``idx`` for evaluation, never another image in its place: an image that cannot be read gives
        ``(None, {"image_id", "file_name", "unreadable": reason})``, logged and counted as training counts them
        (too many still raise :class:`UnreadableImagesError`: a wrong image folder, not a few damaged files)."""
        i = int(idx)
        image, reason = (None, self._bad[i]) if i in self._bad else self.decoded_image(i)
        if image is not None:
            return self._make_sample(i, image)
        if i not in self._bad:
            self._register_bad(i, self.get_file_name(i), reason,
                               instead="not predicted, and left out of the ground truth of the evaluation")
        return None, {"image_id": self._image_id(i), "file_name": self.get_file_name(i), "unreadable": reason}

    def _make_sample(self, i: int, image: np.ndarray):
        path = self.get_file_name(i)
        h0, w0 = image.shape[:2]
        eh, ew = (int(v) for v in self._hw[i])
        if eh > 0 and ew > 0 and (eh, ew) != (h0, w0) and i not in self._size_warned:
            self._size_warned.add(i)
            logger.warning("%s: image %s decodes to (h, w) = (%d, %d) but the annotations say (%d, %d); "
                           "boxes are used as annotated and clipped to the decoded image",
                           type(self).__name__, path, h0, w0, eh, ew)
        target = self.get_annotation(i)
        if self.transforms is not None:
            image, target = self.transforms(image, target, self.rng)
        h, w = image.shape[:2]
        out = {
            "boxes": torch.from_numpy(np.asarray(target["boxes"], dtype=np.float32).reshape(-1, 4).copy()),
            "labels": torch.from_numpy(np.asarray(target["labels"], dtype=np.int64).reshape(-1).copy()),
            "image_id": self._image_id(i),
            "orig_size": torch.tensor([h0, w0], dtype=torch.int64),
            "size": torch.tensor([h, w], dtype=torch.int64),
            "file_name": path,
            "crowd_boxes": torch.from_numpy(
                np.asarray(target.get("crowd_boxes", np.zeros((0, 4))), dtype=np.float32).reshape(-1, 4).copy()),
        }
        for k in self.per_box_extra:
            out[k] = torch.from_numpy(np.asarray(target[k]).copy())
        return self._to_tensor(image), out


# ============================================================================ COCO
