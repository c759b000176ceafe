"""data/build.py: every data.dataset name builds its reader from the config, on a tiny set written by hand, and
the training set gets data.pipeline's transforms with data.random_shift as the config says; the loaders."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from config import load_config
from config.listing import family_names
from data.build import build_dataset
from data.coco import COCODetection
from data.transforms import RandomShift
from data.voc import VOCDetection
from data.voc_xml import VOCXMLDetection
from data.yolo import YOLODetection
from tests.conftest import COCO_SPLIT, COCO_TINY, REPO
from tests.layouts import IMAGES, expected_boxes, write_voc_xml_set, write_yolo_set

FIRST = "000000005001.jpg"  # the first image of tests/assets, in file-name order


def _voc_devkit(root):
    """VOC2007 with the first test image and one hand-written object (VOC pixels: 1-based, inclusive)."""
    d = root / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (d / sub).mkdir(parents=True)
    shutil.copy(IMAGES / FIRST, d / "JPEGImages" / "000001.jpg")
    (d / "Annotations" / "000001.xml").write_text(
        "<annotation><filename>000001.jpg</filename><size><width>640</width><height>480</height><depth>3</depth>"
        "</size><object><name>dog</name><difficult>0</difficult><bndbox><xmin>11</xmin><ymin>21</ymin>"
        "<xmax>60</xmax><ymax>80</ymax></bndbox></object></annotation>")
    (d / "ImageSets" / "Main" / "test.txt").write_text("000001\n")


def _dataset(name: str, tmp_path):
    """(config overrides, split, reader class, (file name, [(class, xyxy)]) of one image) for data.dataset name."""
    coco_first = ("000000005001.jpg", expected_boxes()["000000005001.jpg"])
    if name == "coco":
        return {"data.root": str(COCO_TINY)}, COCO_SPLIT, COCODetection, coco_first
    if name == "yolo":
        return {"data.root": str(write_yolo_set(tmp_path / "yolo"))}, "val", YOLODetection, coco_first
    if name == "voc_xml":
        return {"data.root": str(write_voc_xml_set(tmp_path / "voc_xml"))}, "val", VOCXMLDetection, coco_first
    if name == "voc":
        _voc_devkit(tmp_path / "VOCdevkit")
        return ({"data.root": str(tmp_path / "VOCdevkit"), "model.num_classes": 20}, "2007_test", VOCDetection,
                ("000001.jpg", [("dog", [10.0, 20.0, 60.0, 80.0])]))
    if name == "synthetic":
        opts = {"data.root": str(tmp_path / "synth"), "data.synthetic.num_train": 2, "data.synthetic.num_val": 2,
                "data.synthetic.image_size": [48, 64], "model.num_classes": 5}
        return opts, "val", COCODetection, None  # its boxes: the json the generator wrote, read below
    raise AssertionError(f"no tiny set for data.dataset={name}: add one here")


def _first_generated_image(root) -> tuple[str, list]:
    """(file name, [(class, xyxy)]) of the first image of a generated split, read from its json."""
    gt = json.loads((root / "annotations" / "instances_val.json").read_text())
    names = {c["id"]: c["name"] for c in gt["categories"]}
    boxes = [(names[a["category_id"]], [x, y, x + w, y + h]) for a in gt["annotations"] if a["image_id"] == 1
             for x, y, w, h in [a["bbox"]]]
    return gt["images"][0]["file_name"], boxes


@pytest.mark.parametrize("name", family_names()["data.dataset"])
def test_every_dataset_name_builds_its_reader_on_a_tiny_set(name, tmp_path):
    opts, split, reader, expected = _dataset(name, tmp_path)
    cfg = load_config(REPO / "config" / "small_cpu.yaml", {"model.num_classes": "auto", **opts,
                                                            "data.dataset": name, "data.val_split": split})
    ds = build_dataset(cfg, split, is_train=False)
    assert type(ds) is reader
    file_name, boxes = expected or _first_generated_image(tmp_path / "synth")
    i = next(i for i in range(len(ds)) if ds.get_file_name(i).endswith(file_name))
    a = ds.get_annotation(i)
    assert [ds.class_names[k] for k in a["labels"]] == [c for c, _ in boxes]
    np.testing.assert_allclose(np.asarray(a["boxes"]).reshape(-1, 4), np.array([b for _, b in boxes]).reshape(-1, 4),
                               atol=1.0)


def test_the_training_pipeline_follows_random_shift():
    for shift in (True, False):
        cfg = load_config(REPO / "config" / "small_cpu.yaml", {"data.root": str(COCO_TINY), "data.dataset": "coco",
                                                                "data.random_shift": shift, "model.num_classes": 80})
        ds = build_dataset(cfg, COCO_SPLIT, is_train=True)
        assert any(isinstance(t, RandomShift) for t in ds.transforms.transforms) == shift


def test_dataloader_workers_have_no_opencv_pool():
    import cv2

    from data.build import build_test_loader

    class Threads(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.tensor(cv2.getNumThreads()), {}

    before = cv2.getNumThreads()
    try:
        loader = build_test_loader(Threads(), 1, num_workers=1)
        assert [int(images[0]) for images, _ in loader] == [1, 1]  # setNumThreads(0): getNumThreads() is 1
    finally:
        cv2.setNumThreads(before)
