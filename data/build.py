"""Datasets and data loaders from the config: the one data builder that train, eval and test share."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from config import ConfigError
from data.coco import COCODetection, load_coco_json
from data.collate import collate
from data.dataset_base import DatasetError, RawSplit
from data.multi_image import training_pipeline
from data.pipelines import build_pipeline
from data.sampler import build_train_sampler
from data.synthetic.generate import generate_synthetic_coco
from data.transforms import Compose
from data.voc import VOC_CLASSES, VOCDetection
from data.voc_xml import (VOCXMLDetection, class_names_in, read_voc_xml_files, read_voc_xml_split, split_xml_files,
                          voc_xml_image_root)
from data.yolo import YOLODetection, read_data_yaml, read_yolo_split

logger = logging.getLogger(__name__)


def voc_image_sets(split: str) -> tuple[tuple[str, str], ...]:
    """``"2007_trainval+2012_trainval"`` -> (("2007", "trainval"), ("2012", "trainval"))."""
    sets = []
    for part in split.split("+"):
        if "_" not in part:
            raise ConfigError(f"VOC split {part!r} must look like 2007_trainval (year_split), joined with '+'")
        year, name = part.split("_", 1)
        sets.append((year, name))
    return tuple(sets)


def _coco_image_dir(cfg, split: str) -> Path:
    """The folder a COCO-layout split's ``file_name`` entries are relative to: ``<root>/<split>/``."""
    return Path(cfg.data.root) / split


def _coco(cfg, split: str, *, is_train: bool, transforms) -> Dataset:
    """``<root>/annotations/instances_<split>.json`` and images in ``<root>/<split>/``."""
    root = Path(cfg.data.root)
    ann = root / "annotations" / f"instances_{split}.json"
    ds = COCODetection(_coco_image_dir(cfg, split), ann, transforms, cfg.model.input_format,
                       filter_empty=is_train and cfg.data.filter_empty, max_skip_fraction=cfg.train.max_skip_fraction,
                       index=not is_train)  # training reads only the packed arrays: no pycocotools index
    if len(ds) and not (root / split).is_dir() and not Path(ds.get_file_name(0)).is_file():
        raise DatasetError(f"image folder not found: {root / split} (it holds the images of {ann})")
    return ds


def _generate_synthetic(cfg) -> None:
    """Generated on first use into ``<root>`` (COCO layout, splits ``train`` / ``val``)."""

    generate_synthetic_coco(Path(cfg.data.root), cfg.data.synthetic)


def _synthetic(cfg, split: str, *, is_train: bool, transforms) -> Dataset:
    """Generated on first use into ``<root>`` (COCO layout, splits ``train`` / ``val``), then read as COCO."""
    _generate_synthetic(cfg)
    return _coco(cfg, split, is_train=is_train, transforms=transforms)


def _voc(cfg, split: str, *, is_train: bool, transforms) -> Dataset:
    """``<root>`` is a VOCdevkit, ``split`` like ``2007_trainval+2012_trainval``; difficult objects kept for testing."""
    return VOCDetection(cfg.data.root, voc_image_sets(split), transforms, cfg.model.input_format,
                        keep_difficult=not is_train, max_skip_fraction=cfg.train.max_skip_fraction)


def _yolo(cfg, split: str, *, is_train: bool, transforms) -> Dataset:
    """``<root>`` is the ``data.yaml``, ``split`` one of its keys (``train``, ``val``...): :mod:`data.yolo`."""
    return YOLODetection(cfg.data.root, split, transforms, cfg.model.input_format,
                         filter_empty=is_train and cfg.data.filter_empty, max_skip_fraction=cfg.train.max_skip_fraction)


def voc_xml_class_names(cfg, split: str) -> list[str]:
    """``data.class_names``, else the sorted names in the XML files of the training, validation and this split.
    A file of the other split that cannot be read is that split's error, raised when it is read (training reads
    both): here its names are left out, so that the error is not reported against this split too."""
    d = cfg.data
    if d.class_names:
        return list(d.class_names)
    names = set(class_names_in(split_xml_files(d.root, split)))
    for other in dict.fromkeys([d.train_split, d.val_split]):
        if other != split:
            try:
                names.update(class_names_in(split_xml_files(d.root, other)))
            except DatasetError:
                pass
    return sorted(names)


def _voc_xml(cfg, split: str, *, is_train: bool, transforms) -> Dataset:
    """``<root>`` holds the split folders (or list files) of VOC XML files: :mod:`data.voc_xml`."""
    return VOCXMLDetection(cfg.data.root, split, voc_xml_class_names(cfg, split), transforms, cfg.model.input_format,
                           filter_empty=is_train and cfg.data.filter_empty,
                           max_skip_fraction=cfg.train.max_skip_fraction)


def _coco_raw(cfg, split: str) -> RawSplit:
    root = Path(cfg.data.root)
    return RawSplit(load_coco_json(root / "annotations" / f"instances_{split}.json"), root / split)


def _synthetic_raw(cfg, split: str) -> RawSplit:
    _generate_synthetic(cfg)
    return _coco_raw(cfg, split)


def _voc_raw(cfg, split: str) -> RawSplit:
    """The XML files the image sets list, read as a folder of VOC XML files with the 20 classes."""
    root = Path(cfg.data.root)
    files = []
    for year, name in voc_image_sets(split):
        listing = root / f"VOC{year}" / "ImageSets" / "Main" / f"{name}.txt"
        if not listing.is_file():
            raise DatasetError(f"VOC image-set file not found: {listing}")
        ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
        files += [root / f"VOC{year}" / "Annotations" / f"{i}.xml" for i in ids]
    return read_voc_xml_files(files, root, VOC_CLASSES)


def _yolo_raw(cfg, split: str) -> RawSplit:
    return read_yolo_split(cfg.data.root, split)


def _yolo_image_dir(cfg, split: str) -> Path:
    """The data.yaml's ``path``: what the split's images are named relative to (:func:`data.yolo.read_yolo_split`)."""
    return read_data_yaml(cfg.data.root).root


def _voc_xml_image_dir(cfg, split: str) -> Path:
    """``data.root``: what the split's images are named relative to (:func:`data.voc_xml.read_voc_xml_files`)."""
    return voc_xml_image_root(cfg.data.root)


def _voc_image_dir(cfg, split: str) -> Path:
    """The devkit (its images are named by full path)."""
    return Path(cfg.data.root)


def _voc_xml_raw(cfg, split: str) -> RawSplit:
    return read_voc_xml_split(cfg.data.root, split, voc_xml_class_names(cfg, split))


def _annotation_file(cfg, split: str) -> str:
    """Ground truth to score a results file: ``<root>/annotations/instances_<split>.json`` (no images needed)."""
    ann = Path(cfg.data.root) / "annotations" / f"instances_{split}.json"
    if not ann.is_file():
        raise DatasetError(f"annotation file not found: {ann}")
    return str(ann)


def _voc_ground_truth(cfg, split: str) -> Dataset:
    """Ground truth to score comp4 files: the VOCDetection of the split, difficult objects kept."""
    return VOCDetection(cfg.data.root, voc_image_sets(split), keep_difficult=True)


def _in_memory_coco(cfg, split: str):
    """Ground truth to score a results file: the split's annotations as the evaluation of a model scores them,
    a COCO object in memory (YOLO txt, VOC XML layouts)."""
    return DATASETS[cfg.data.dataset].build(cfg, split, is_train=False, transforms=Compose([])).coco


@dataclasses.dataclass(frozen=True)
class DatasetFormat:
    """One ``data.dataset``: how a split is read, how it is scored, the split ``eval.py --results`` scores
    when neither ``--split`` nor ``--config`` names one, and how its annotations read before any cleaning."""

    build: Callable[..., Dataset]  # (cfg, split, *, is_train, transforms) -> dataset with class_names
    metric: str  # "coco" (pycocotools) or "voc" (the devkit): evaluation.evaluator.METRICS
    val_split: str
    # (cfg, split) -> the annotations as written, in COCO form (tools/check_dataset.py)
    read_raw: Callable[..., RawSplit]
    ground_truth: Callable  # (cfg, split) -> what METRICS[metric].score_file scores a results file against
    image_dir: Callable[..., Path]  # (cfg, split) -> the folder the ground truth's file names are relative to


# every data.dataset (the names of config.schema.DatasetName); the scripts' -d read them
DATASETS: dict[str, DatasetFormat] = {
    "coco": DatasetFormat(_coco, metric="coco", val_split="val2017", read_raw=_coco_raw, ground_truth=_annotation_file,
                          image_dir=_coco_image_dir),
    "voc": DatasetFormat(_voc, metric="voc", val_split="test", read_raw=_voc_raw,  # + eval.py --year
                         ground_truth=_voc_ground_truth, image_dir=_voc_image_dir),
    "synthetic": DatasetFormat(_synthetic, metric="coco", val_split="val", read_raw=_synthetic_raw,
                               ground_truth=_annotation_file, image_dir=_coco_image_dir),
    # scored by the COCO evaluator against their annotations read into COCO form (the dataset's ``coco``)
    "yolo": DatasetFormat(_yolo, metric="coco", val_split="val", read_raw=_yolo_raw, ground_truth=_in_memory_coco,
                          image_dir=_yolo_image_dir),
    "voc_xml": DatasetFormat(_voc_xml, metric="coco", val_split="val", read_raw=_voc_xml_raw,
                             ground_truth=_in_memory_coco, image_dir=_voc_xml_image_dir),
}


def _check_num_classes(cfg, ds: Dataset, split: str) -> None:
    if cfg.model.num_classes != "auto" and len(ds.class_names) != cfg.model.num_classes:
        raise ConfigError(
            f"{cfg.data.dataset} split {split!r} has {len(ds.class_names)} classes but model.num_classes is "
            f"{cfg.model.num_classes}; set model.num_classes={len(ds.class_names)} (or auto)"
        )


def build_dataset(cfg, split: str, *, is_train: bool, transforms=None) -> Dataset:
    """The dataset of ``split`` with the training or test transforms of ``cfg`` (``DATASETS[data.dataset]``).

    The transforms are ``data.pipeline``'s (:mod:`data.pipelines`) unless given; a training set's pipeline gets
    the multi-image steps the config turns on (``data.mosaic``, ``data.mixup``: :mod:`data.multi_image`), which
    draw their other images from the dataset itself.
    """
    d = cfg.data
    multi_image = transforms is None and is_train
    if transforms is None:
        transforms = build_pipeline(d, is_train)
    ds = DATASETS[d.dataset].build(cfg, split, is_train=is_train, transforms=transforms)
    _check_num_classes(cfg, ds, split)
    if multi_image:
        ds.transforms = training_pipeline(d, ds, ds.transforms)
    return ds


class SeededDataset(Dataset):
    """Wraps a dataset so that item ``(index, seed)`` is augmented with ``default_rng(seed)``.

    With :class:`data.sampler.ResumableSampler` the augmentation of every image is a pure
    function of (run seed, epoch, position): independent of the number of
    workers, and identical after ``--resume``.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        index, seed = item
        self.dataset.set_rng(np.random.default_rng(seed))
        return self.dataset[index]


def _limit_opencv_threads(workers: int) -> None:
    """No OpenCV thread pool in DataLoader workers: 64 workers would each start one the size of the machine.

    Set in this process before the workers fork, so they inherit it: calling ``cv2.setNumThreads`` inside a
    forked worker whose parent has used OpenCV's pool can block forever (the pool's condition variable still
    counts the parent's idle threads, which do not exist in the child).
    With no workers, this process decodes and keeps OpenCV's threads.
    """
    if workers > 0:
        cv2.setNumThreads(0)


def build_train_loader(cfg, dataset: Dataset, batch_per_process: int, rank: int, world_size: int,
                       accumulate: int = 1) -> tuple[DataLoader, Sampler]:
    sampler = build_train_sampler(cfg, dataset, batch_per_process, rank, world_size, accumulate)
    workers = cfg.data.num_workers
    _limit_opencv_threads(workers)
    loader = DataLoader(SeededDataset(dataset), batch_size=batch_per_process, sampler=sampler, drop_last=True,
                        num_workers=workers, collate_fn=collate, persistent_workers=False,
                        pin_memory=torch.cuda.is_available(), prefetch_factor=4 if workers > 0 else None)
    return loader, sampler


class EvaluationSamples(Dataset):
    """A dataset as evaluation reads it: every image once, an unreadable one as ``(None, target)`` with
    ``target["unreadable"]`` (:meth:`data.dataset_base.DetectionDatasetBase.evaluation_sample`), never replaced
    by another sample as training replaces it. A dataset without that method is read as it is."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        read = getattr(self.dataset, "evaluation_sample", None)
        return read(index) if read is not None else self.dataset[index]


def build_test_loader(dataset: Dataset, batch_size: int, num_workers: int, rank: int = 0,
                      world_size: int = 1) -> DataLoader:
    """Sequential loader over this rank's share (every world_size-th image), each image once
    (:class:`EvaluationSamples`)."""
    indices = list(range(rank, len(dataset), world_size))
    subset = torch.utils.data.Subset(EvaluationSamples(dataset), indices)
    _limit_opencv_threads(num_workers)
    return DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate,
                      pin_memory=torch.cuda.is_available())
