"""tools/convert_dataset.py, tools/check_dataset.py and tools/browse_dataset.py on the seven COCO images of
tests/assets: round trips through YOLO and VOC XML, hand-written Label Studio and CVAT exports, injected faults,
and the drawn training samples."""
from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from config import load_config
from data.dataset_base import DatasetError
from data.yolo import YOLODetection
from tests.conftest import COCO_TINY, REPO
from tests.layouts import IMAGES, coco_names, expected_boxes, write_yolo_set
from tools import check_dataset, convert_dataset


def _coco_boxes(root, split: str) -> dict[str, list[tuple[str, list[float], int]]]:
    """File name -> [(class name, xyxy, iscrowd)] of a written COCO split, in annotation order."""
    gt = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
    names = {c["id"]: c["name"] for c in gt["categories"]}
    files = {im["id"]: im["file_name"] for im in gt["images"]}
    out: dict[str, list] = {f: [] for f in files.values()}
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        out[files[a["image_id"]]].append((names[a["category_id"]], [x, y, x + w, y + h], a["iscrowd"]))
    return out


def _assert_round_trip(back: dict, include_crowd: bool) -> None:
    expected = expected_boxes(include_crowd)
    assert sorted(back) == sorted(expected)
    for name, boxes in expected.items():
        assert [c for c, _, _ in back[name]] == [c for c, _ in boxes], name
        np.testing.assert_allclose([b for _, b, _ in back[name]], [b for _, b in boxes], atol=1.0, rtol=0,
                                   err_msg=name)


def test_coco_yolo_coco_round_trip(tmp_path, coco_tiny):
    assert convert_dataset.main(["--from", "coco", "--to", "yolo", str(COCO_TINY), str(tmp_path / "yolo")]) == 0
    assert (tmp_path / "yolo" / "images" / "val2017" / "000000005001.jpg").is_symlink()
    assert YOLODetection(tmp_path / "yolo" / "data.yaml", "val2017").class_names == coco_names()
    assert convert_dataset.main(["--from", "yolo", "--to", "coco", "--copy", str(tmp_path / "yolo" / "data.yaml"),
                                 str(tmp_path / "back")]) == 0
    copied = tmp_path / "back" / "val2017" / "000000005001.jpg"
    assert not copied.is_symlink() and copied.read_bytes() == (IMAGES / "000000005001.jpg").read_bytes()
    _assert_round_trip(_coco_boxes(tmp_path / "back", "val2017"), include_crowd=False)  # YOLO has no crowd
    back = json.loads((tmp_path / "back" / "annotations" / "instances_val2017.json").read_text())
    assert [c["name"] for c in back["categories"]] == coco_names()  # all 80, with and without boxes


def test_classes_keeps_renames_and_orders_a_subset(tmp_path, coco_tiny):
    """--classes car person=human: a 2-class YOLO set, car 0 and human 1, holding exactly the json's non-crowd car
    and person boxes (the other objects stay in the images, unlabelled)."""
    assert convert_dataset.main(["--from", "coco", "--to", "yolo", str(COCO_TINY), str(tmp_path / "yolo"),
                                 "--classes", "car", "person=human"]) == 0
    ds = YOLODetection(tmp_path / "yolo" / "data.yaml", "val2017", filter_empty=False)
    assert ds.class_names == ["car", "human"]
    got = Counter(ds.class_names[k] for i in range(len(ds)) for k in ds.get_annotation(i)["labels"])
    want = Counter("human" if c == "person" else c for boxes in expected_boxes().values() for c, _ in boxes
                   if c in ("car", "person"))
    assert got == want and got["car"] == 9
    with pytest.raises(DatasetError, match=r"--classes: 'unicorn' is not a class of the source \(its classes: per"):
        convert_dataset.main(["--from", "coco", "--to", "yolo", str(COCO_TINY), str(tmp_path / "bad"),
                              "--classes", "unicorn"])


def test_coco_voc_xml_coco_round_trip(tmp_path, coco_tiny):
    assert convert_dataset.main(["--from", "coco", "--to", "voc_xml", str(COCO_TINY), str(tmp_path / "voc")]) == 0
    xml = ET.parse(tmp_path / "voc" / "val2017" / "000000005001.xml").getroot()
    assert xml.findtext("filename") == "000000005001.jpg" and xml.findtext("size/width") == "640"
    assert convert_dataset.main(["--from", "voc_xml", "--to", "coco", str(tmp_path / "voc"),
                                 str(tmp_path / "back")]) == 0
    back = _coco_boxes(tmp_path / "back", "val2017")
    _assert_round_trip(back, include_crowd=True)  # integer pixels: within 0.5 px
    assert sum(crowd for boxes in back.values() for _, _, crowd in boxes) == 2  # crowd -> difficult -> crowd


def _png(path, h: int, w: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.zeros((h, w, 3), np.uint8))


def test_labelstudio_exports_to_coco(tmp_path):
    _png(tmp_path / "media" / "cat.jpg", 100, 200)
    _png(tmp_path / "media" / "5d4c3b2a-dog.png", 50, 80)
    # JSON-min: percentages of the original size; the second box turned 90 degrees about its top-left corner
    json_min = [
        {"image": "/data/upload/1/cat.jpg", "id": 1, "label": [
            {"x": 10, "y": 20, "width": 30, "height": 40, "rotation": 0, "rectanglelabels": ["cat"],
             "original_width": 200, "original_height": 100},
            {"x": 50, "y": 10, "width": 30, "height": 40, "rotation": 90, "rectanglelabels": ["bird"],
             "original_width": 200, "original_height": 100}]},
        {"image": "/data/upload/1/5d4c3b2a-dog.png", "id": 2},  # no box: a background image
    ]
    (tmp_path / "min.json").write_text(json.dumps(json_min))
    assert convert_dataset.main(["--from", "labelstudio", "--to", "coco", str(tmp_path / "min.json"),
                                 str(tmp_path / "out"), "--image_dir", str(tmp_path / "media")]) == 0
    gt = json.loads((tmp_path / "out" / "annotations" / "instances_train.json").read_text())
    assert gt["categories"] == [{"id": 1, "name": "bird"}, {"id": 2, "name": "cat"}]  # sorted
    assert [(im["file_name"], im["height"], im["width"]) for im in gt["images"]] == [
        ("cat.jpg", 100, 200), ("5d4c3b2a-dog.png", 50, 80)]  # the size of the box-less image from its header
    # cat: x 10% of 200 = 20, y 20% of 100 = 20, 60 x 40. bird: 60 x 40 at (100, 10) turned 90 degrees
    # clockwise about (100, 10): corners (100, 10), (100, 70), (60, 70), (60, 10) -> [60, 10, 40, 60]
    boxes = [(a["category_id"], a["image_id"], a["bbox"]) for a in gt["annotations"]]
    assert [b[:2] for b in boxes] == [(2, 1), (1, 1)]
    np.testing.assert_allclose([b[2] for b in boxes], [[20, 20, 60, 40], [60, 10, 40, 60]], atol=1e-9)

    # the JSON export: results in the last annotation that was not cancelled; the uploaded name lost its prefix
    full = [{"id": 7, "data": {"image": "/data/upload/1/0a1b2c3d-cat.jpg"}, "annotations": [
        {"result": [{"type": "rectanglelabels", "original_width": 200, "original_height": 100,
                     "value": {"x": 50, "y": 50, "width": 25, "height": 50, "rotation": 0,
                               "rectanglelabels": ["cat"]}}]},
        {"was_cancelled": True, "result": []}]}]
    (tmp_path / "full.json").write_text(json.dumps(full))
    convert_dataset.main(["--from", "labelstudio", "--to", "coco", str(tmp_path / "full.json"), str(tmp_path / "o2"),
                          "--image_dir", str(tmp_path / "media"), "--split", "val"])
    gt = json.loads((tmp_path / "o2" / "annotations" / "instances_val.json").read_text())
    assert gt["images"][0]["file_name"] == "cat.jpg" and gt["annotations"][0]["bbox"] == [100, 50, 50, 50]
    assert (tmp_path / "o2" / "val" / "cat.jpg").resolve() == (tmp_path / "media" / "cat.jpg").resolve()


def test_cvat_export_to_coco(tmp_path):
    _png(tmp_path / "images" / "sub" / "a.png", 60, 100)
    _png(tmp_path / "images" / "b.png", 60, 100)
    (tmp_path / "annotations.xml").write_text("""<?xml version="1.0" encoding="utf-8"?>
<annotations><version>1.1</version>
  <meta><task><labels><label><name>car</name></label><label><name>person</name></label><label><name>bike</name></label>
  </labels></task></meta>
  <image id="0" name="sub/a.png" width="100" height="60">
    <box label="person" occluded="0" xtl="10.5" ytl="20" xbr="30.5" ybr="50" z_order="0"/>
    <box label="car" occluded="0" xtl="10" ytl="20" xbr="50" ybr="40" rotation="90" z_order="0"/>
    <polygon label="car" points="1,1;5,1;5,5"/>
  </image>
  <image id="1" name="b.png" width="100" height="60"/>
</annotations>""")
    assert convert_dataset.main(["--from", "cvat", "--to", "coco", str(tmp_path / "annotations.xml"),
                                 str(tmp_path / "out")]) == 0  # images/ beside the export, as in CVAT's zip
    gt = json.loads((tmp_path / "out" / "annotations" / "instances_train.json").read_text())
    assert [c["name"] for c in gt["categories"]] == ["car", "person", "bike"]  # <meta>'s order
    assert [(im["id"], im["file_name"]) for im in gt["images"]] == [(1, "sub/a.png"), (2, "b.png")]
    # person: [10.5, 20, 20, 30]. car: 40 x 20 centred on (30, 30) turned 90 degrees: 20 x 40 -> [20, 10, 20, 40]
    assert [(a["image_id"], a["category_id"]) for a in gt["annotations"]] == [(1, 2), (1, 1)]  # the polygon left out
    np.testing.assert_allclose([a["bbox"] for a in gt["annotations"]], [[10.5, 20, 20, 30], [20, 10, 20, 40]],
                               atol=1e-9)
    assert (tmp_path / "out" / "train" / "sub" / "a.png").is_symlink()


def test_check_dataset_counts_tests_assets(tmp_path, coco_tiny, capsys):
    out = tmp_path / "check.json"
    opts = ["data.dataset=coco", f"data.root={COCO_TINY}", "data.train_split=val2017", "data.val_split=val2017",
            "model.num_classes=auto"]
    # 7 images, fewer than small_cpu's batch of 16: training would stop before its first step
    assert check_dataset.main(["--config", str(REPO / "config/small_cpu.yaml"), "--opts", *opts, "--out", str(out),
                               "--skip_images"]) == 1
    assert json.loads(out.read_text())["errors"] == [
        "split 'val2017': 7 training images with boxes, fewer than one batch of solver.batch_size=16: training would "
        "stop before its first step; set --opts solver.batch_size=4 (docs/your_own_data.md, small sets)"]
    assert check_dataset.main(["--config", str(REPO / "config/small_cpu.yaml"), "--opts", *opts,
                               "solver.batch_size=4", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["errors"] == [] and len(report["splits"]) == 1
    r = report["splits"][0]
    assert (r["images"], r["boxes"], r["crowd_or_difficult"], r["classes"]) == (7, 74, 2, 80)
    assert r["sizes"] == {"small": 27, "medium": 29, "large": 18}  # tests/assets/README.md
    counted = Counter(c for boxes in expected_boxes().values() for c, _ in boxes)  # the json, read here
    assert {k: v for k, v in r["per_class"].items() if v} == dict(counted) and r["per_class"]["car"] == 9
    assert sum(b["boxes"] for b in r["size_histogram"]) == 74
    assert sum(map(sum, (r["aspect_histogram"][c] for c in ("small", "medium", "large")))) == 74
    a = r["anchors"]
    assert a["boxes"] == 74 and a["stride"] == 32 and 0 < a["best_iou_below_0.5"] < 1
    assert all(not v for v in r["problems"].values())
    assert "no errors training would fail on" in capsys.readouterr().out


def test_check_dataset_names_each_injected_fault(tmp_path, coco_tiny, capsys):
    root = tmp_path / "yolo"
    data_yaml = write_yolo_set(root, splits=("train",))
    images, labels = root / "images" / "train", root / "labels" / "train"
    (images / "broken.jpg").write_bytes(b"not a jpeg")  # unreadable image, with a label file
    (labels / "broken.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    shutil.copy(IMAGES / "000000404484.jpg", images / "copy_of_404484.jpg")  # duplicate image
    (labels / "000000223747.txt").write_text("15 0.5 0.5 0.0 0.3\n0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n"
                                              "85 0.5 0.5 0.2 0.2\n")  # zero-area, duplicate, outside names
    (labels / "000000333956.txt").write_text("0 0.5 0.5 -0.1 0.3\n")  # a negative width
    (labels / "000000360960.txt").unlink()  # no label file: a background image, named where it was looked for
    args = ["--config", str(REPO / "config/small_cpu.yaml"), "--opts", "data.dataset=yolo", f"data.root={data_yaml}",
            "data.train_split=train", "data.val_split=train", "model.num_classes=auto", "solver.batch_size=4",
            "--out", str(tmp_path / "check.json")]
    assert check_dataset.main(args) == 1  # a label outside the names: the dataset refuses to load
    printed = capsys.readouterr().out
    problems = json.loads((tmp_path / "check.json").read_text())["splits"][0]["problems"]
    label_file = str(labels / "000000223747.txt")
    assert problems["labels_outside_names"] == [f"{label_file} line 4: class id 85 is outside the 80 names of the "
                                                f"data.yaml (0..79)"]
    assert [p.split(":")[0] for p in problems["zero_area_boxes"]] == [f"{label_file} line 1"]
    (negative,) = problems["negative_size_boxes"]  # cx 0.5, w -0.1 of 428 px: x = 0.55 * 428, w = -42.8
    where, box, what = negative.split(": ")
    assert where == f"{labels / '000000333956.txt'} line 1" and what == "negative width"
    assert json.loads(box.removeprefix("bbox [x, y, w, h] ")) == pytest.approx([235.4, 224.0, -42.8, 192.0])
    assert problems["images_without_label_file"] == [
        f"{images / '000000360960.jpg'}: no label file {labels / '000000360960.txt'} (a background image)",
        f"{images / 'copy_of_404484.jpg'}: no label file {labels / 'copy_of_404484.txt'} (a background image)"]
    assert "9 images (3 without boxes, 2 of them without a label file)" in printed
    assert problems["duplicate_boxes"] == [f"{label_file} line 3 repeats {label_file} line 2 (IoU 1.00)"]
    assert [p.split(":")[0] for p in problems["unreadable_images"]] == [str(images / "broken.jpg")]
    assert problems["duplicate_images"] == [[str(images / "000000404484.jpg"), str(images / "copy_of_404484.jpg")]]
    assert "errors training would fail on" in printed and f"{label_file} line 4" in printed

    (labels / "000000223747.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    assert check_dataset.main(args) == 0  # one unreadable image: training skips it (up to 10)


def test_a_broken_xml_file_is_reported_against_its_own_split_only(tmp_path, coco_tiny):
    from tests.layouts import write_voc_xml_set

    root = write_voc_xml_set(tmp_path / "voc")
    (root / "train" / "000000223747.xml").unlink()
    (root / "train" / "000000223747.xml").write_text("<annotation><object><name>cat</name>")  # not closed
    out = tmp_path / "check.json"
    assert check_dataset.main(["--config", str(REPO / "config/small_cpu.yaml"), "--opts", "data.dataset=voc_xml",
                               f"data.root={root}", "data.train_split=train", "data.val_split=val",
                               "model.num_classes=auto", "solver.batch_size=4", "--skip_images",
                               "--out", str(out)]) == 1
    errors = json.loads(out.read_text())["errors"]
    assert len(errors) == 1 and errors[0].startswith("split 'train': ") and "000000223747.xml" in errors[0]


def test_browse_dataset_draws_the_training_samples(tmp_path, coco_tiny):
    """The pictures are the training samples as the model sees them (the k-th: a distinct image drawn with
    np.random.default_rng(train.seed), augmented with the generator seed + k, as documented), the pixels unchanged
    but for an outline on each box and its name tag: derived here from the dataset alone, not with browse()'s
    drawing functions."""
    from data.build import build_dataset
    from tools import browse_dataset

    opts = ["data.dataset=coco", f"data.root={COCO_TINY}", "data.train_split=val2017", "data.val_split=val2017",
            "model.num_classes=auto", "data.mosaic.prob=1.0", "data.mosaic.size=[320,320]",
            "data.train_min_size=[160]", "data.train_max_size=320"]
    assert browse_dataset.main(["--config", str(REPO / "config/small_cpu.yaml"), "--opts", *opts, "-n", "3",
                                "--out", str(tmp_path / "browse")]) == 0
    pictures = sorted((tmp_path / "browse").glob("*.png"))
    assert len(pictures) == 3
    cfg = load_config(REPO / "config/small_cpu.yaml", opts)
    dataset = build_dataset(cfg, "val2017", is_train=True)
    picked = np.random.default_rng(cfg.train.seed).choice(len(dataset), size=3, replace=False)
    for k, (picture, index) in enumerate(zip(pictures, picked.tolist())):
        dataset.set_rng(np.random.default_rng(cfg.train.seed + k))
        image, target = dataset[index]
        raw = image.clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()[:, :, ::-1]  # RGB tensor -> BGR pixels
        drawn = cv2.imread(str(picture))
        assert picture.name == f"{k:02d}_{Path(target['file_name']).stem}.png"
        assert drawn.shape == raw.shape == (320, 320, 3) and len(target["boxes"]) > 0  # the mosaic canvas
        h, w = raw.shape[:2]
        may_differ = np.zeros((h, w), dtype=bool)
        outlines = []
        for (x1, y1, x2, y2), label in zip(np.round(target["boxes"].numpy()).astype(int).tolist(),
                                           target["labels"].tolist()):
            x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w - 1), min(y2, h - 1)
            for band in ((slice(y1, y2 + 1), slice(x1, x1 + 2)), (slice(y1, y2 + 1), slice(x2 - 1, x2 + 1)),
                         (slice(y1, y1 + 2), slice(x1, x2 + 1)), (slice(y2 - 1, y2 + 1), slice(x1, x2 + 1))):
                may_differ[band] = True  # a 2-px outline inside the box
            outlines.append((slice(y1 + 2, y2 - 1), x1))  # the left edge, below the tag
            name = dataset.class_names[label]
            tag_w = 9 * len(name) + 8  # the tag: above the box's top-left corner (or just inside), a line high
            may_differ[max(y1 - 20, 0):y1 + 20, max(min(x1, w - tag_w) - 2, 0):x1 + tag_w] = True
        assert np.array_equal(drawn[~may_differ], raw[~may_differ])  # every other pixel is the training sample's
        for rows, x in outlines:
            edge = np.any(drawn[rows, x] != raw[rows, x], axis=-1)
            assert edge.size == 0 or edge.mean() > 0.5  # an outline where the box is


def test_check_dataset_reads_a_vocdevkit(tmp_path):
    """data.dataset=voc: the image set's XML files, read as VOC XML with the 20 classes (difficult: crowd)."""
    voc = tmp_path / "VOCdevkit" / "VOC2007"
    _png(voc / "JPEGImages" / "000001.jpg", 100, 200)  # a JPEG, by its suffix
    (voc / "Annotations").mkdir()
    (voc / "Annotations" / "000001.xml").write_text(
        "<annotation><size><width>200</width><height>100</height></size>"
        "<object><name>car</name><difficult>0</difficult><bndbox><xmin>11</xmin><ymin>21</ymin><xmax>50</xmax>"
        "<ymax>60</ymax></bndbox></object><object><name>dog</name><difficult>1</difficult><bndbox><xmin>1</xmin>"
        "<ymin>1</ymin><xmax>200</xmax><ymax>100</ymax></bndbox></object></annotation>")
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "test.txt").write_text("000001\n")
    cfg = load_config(REPO / "config/small_cpu.yaml", ["data.dataset=voc", f"data.root={tmp_path / 'VOCdevkit'}",
                                                        "data.train_split=2007_test", "model.num_classes=20",
                                                        "solver.batch_size=1"])
    r = check_dataset.check_split(cfg, "2007_test")
    assert r["errors"] == [] and (r["images"], r["boxes"], r["crowd_or_difficult"], r["classes"]) == (1, 1, 1, 20)
    assert r["per_class"]["car"] == 1 and r["sizes"] == {"small": 0, "medium": 1, "large": 0}  # 40 x 40 px
    assert all(not v for v in r["problems"].values())
