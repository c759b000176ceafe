"""data.dataset: yolo and voc_xml (data/yolo.py, data/voc_xml.py): the seven COCO images of tests/assets written
by hand in each layout (tests/layouts.py) load to the COCO boxes and names, train with model.num_classes=auto
and are scored by the COCO evaluator, per class by name; the YOLO reader's edge cases."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
import yaml

from config import ConfigError, load_config
from data.build import build_dataset
from data.dataset_base import DatasetError
from data.voc_xml import VOCXMLDetection
from data.yolo import YOLODetection, label_file
from tests.conftest import REPO
from tests.layouts import IMAGES, coco_names, expected_boxes, write_voc_xml_set, write_yolo_set


def _names_used() -> list[str]:
    return sorted({c for boxes in expected_boxes(include_crowd=True).values() for c, _ in boxes})


def _boxes_by_file(ds) -> dict[str, list[tuple[str, np.ndarray]]]:
    out = {}
    for i in range(len(ds)):
        a = ds.get_annotation(i)
        name = ds.get_file_name(i).rsplit("/", 1)[-1]
        out[name] = [(ds.class_names[k], b) for k, b in zip(a["labels"], a["boxes"])]
    return out


def _assert_same_boxes(got: dict, expected: dict) -> None:
    """Per image, the same class names and boxes within 1 px, in the same order."""
    assert sorted(got) == sorted(expected)
    for name, boxes in expected.items():
        assert [c for c, _ in got[name]] == [c for c, _ in boxes], name
        np.testing.assert_allclose(np.array([b for _, b in got[name]]).reshape(-1, 4),
                                   np.array([b for _, b in boxes]).reshape(-1, 4), atol=1.0, rtol=0, err_msg=name)


@pytest.mark.parametrize("names_as_dict", [False, True])
def test_yolo_set_loads_the_coco_boxes_and_names(tmp_path, coco_tiny, names_as_dict):
    data_yaml = write_yolo_set(tmp_path / "yolo", names_as_dict=names_as_dict)
    ds = YOLODetection(data_yaml, "val", filter_empty=False)
    assert ds.class_names == coco_names()  # 80 names, in the COCO category order
    _assert_same_boxes(_boxes_by_file(ds), expected_boxes())  # every label file ends with a blank line
    assert (ds.image_sizes == [[480, 640], [425, 640], [370, 500], [640, 428], [640, 426], [240, 320],
                               [427, 640]]).all()  # read from the headers: the aspect-ratio groups need them
    gt = ds.coco.dataset  # the ground truth in COCO form, for the COCO evaluator
    assert len(gt["images"]) == 7 and len(gt["annotations"]) == 74 and gt["annotations"][0]["source"].endswith(
        "000000005001.txt line 1")
    copy = pickle.loads(pickle.dumps(ds))  # as a DataLoader worker gets it: reads its files again for `coco`
    assert copy.coco.dataset == gt and len(copy) == 7


def test_yolo_background_image_bad_class_and_polygon(tmp_path, coco_tiny):
    data_yaml = write_yolo_set(tmp_path / "yolo", splits=("val",))
    labels = tmp_path / "yolo" / "labels" / "val"
    (labels / "000000404484.txt").unlink()  # no label file: a background image
    ds = YOLODetection(data_yaml, "val", filter_empty=False)
    assert len(ds) == 7 and len(_boxes_by_file(ds)["000000404484.jpg"]) == 0
    assert len(YOLODetection(data_yaml, "val", filter_empty=True)) == 6  # training drops it, as COCO does

    # a polygon line (the segmentation layout) counts as its bounding box: x 0.25..0.75, y 0.5..1 of 320 x 240
    (labels / "000000404484.txt").write_text("3 0.25 0.5 0.75 0.5 0.75 1.0 0.25 1.0\n")
    ds = YOLODetection(data_yaml, "val", filter_empty=False)
    assert _boxes_by_file(ds)["000000404484.jpg"][0][0] == "motorcycle"
    np.testing.assert_allclose(_boxes_by_file(ds)["000000404484.jpg"][0][1], [80, 120, 240, 240])

    lines = (labels / "000000223747.txt").read_text().splitlines()
    lines[1] = "80 " + lines[1].split(" ", 1)[1]  # names has 80 entries: ids 0..79
    (labels / "000000223747.txt").write_text("\n".join(lines))
    with pytest.raises(DatasetError, match=r"000000223747\.txt line 2: class id 80 is outside the 80 names"):
        YOLODetection(data_yaml, "val")
    (labels / "000000223747.txt").write_text("1 0.5 0.5 0.2\n")
    with pytest.raises(DatasetError, match=r"000000223747\.txt line 1: expected 5 numbers"):
        YOLODetection(data_yaml, "val")


def test_yolo_split_list_file_and_roboflow_paths(tmp_path, coco_tiny):
    root = tmp_path / "yolo"
    write_yolo_set(root, splits=("train",))
    (root / "val.txt").write_text("./images/train/000000005001.jpg\nimages/train/000000333956.jpg\n")
    # Roboflow writes "../train/images" relative to a root one level up; ultralytics tries it without "../"
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "../images/train", "val": "val.txt",
                                                    "names": coco_names()}))
    assert len(YOLODetection(root / "data.yaml", "train", filter_empty=False)) == 7
    ds = YOLODetection(root / "data.yaml", "val", filter_empty=False)
    assert [ds.get_file_name(i).rsplit("/", 1)[-1] for i in range(2)] == ["000000005001.jpg", "000000333956.jpg"]
    assert label_file(root / "images" / "train" / "a.jpg") == root / "labels" / "train" / "a.txt"
    with pytest.raises(DatasetError, match=r"has no split 'train2017'; its splits: train, val"):
        YOLODetection(root / "data.yaml", "train2017")


@pytest.mark.parametrize("parallel", [False, True])
def test_voc_xml_set_loads_the_coco_boxes_and_names(tmp_path, coco_tiny, parallel):
    root = write_voc_xml_set(tmp_path / "voc", parallel=parallel)
    cfg = load_config(REPO / "config/small_cpu.yaml", ["data.dataset=voc_xml", f"data.root={root}",
                                                        "data.train_split=train", "data.val_split=val",
                                                        "model.num_classes=auto"])
    ds = build_dataset(cfg, "val", is_train=False)
    expected = expected_boxes()
    assert ds.class_names == _names_used()  # from the XML files, sorted
    raw = VOCXMLDetection(root, "val", coco_names(), filter_empty=False)  # data.class_names: the 80, in order
    assert raw.class_names == coco_names()
    _assert_same_boxes(_boxes_by_file(raw), expected)  # integer VOC pixels: within 0.5 px
    # the two crowd boxes were written as difficult objects: not training boxes, ignored regions when scored
    crowd = {raw.get_file_name(i).rsplit("/", 1)[-1]: len(raw.get_annotation(i)["crowd_boxes"]) for i in range(7)}
    assert crowd["000000005001.jpg"] == 1 and crowd["000000184324.jpg"] == 1 and sum(crowd.values()) == 2
    assert sum(a["iscrowd"] for a in raw.coco.dataset["annotations"]) == 2


def test_voc_xml_name_outside_class_names_and_config_key(tmp_path, coco_tiny):
    root = write_voc_xml_set(tmp_path / "voc", splits=("val",))
    with pytest.raises(DatasetError, match=r"000000223747\.xml: object #0: class 'cat' is not one of"):
        VOCXMLDetection(root, "val", [n for n in coco_names() if n != "cat"])
    with pytest.raises(DatasetError, match=r"neither a folder .*train2017"):
        VOCXMLDetection(root, "train2017")
    with pytest.raises(ConfigError, match=r"data.class_names.*voc_xml only"):
        load_config(REPO / "config/small_cpu.yaml", ["data.class_names=[a, b]"])
    with pytest.raises(ConfigError, match=r"data.class_names.*distinct"):
        load_config(REPO / "config/small_cpu.yaml", ["data.dataset=voc_xml", "data.class_names=[a, a]"])


def _tiny(layout: str, root) -> list[str]:
    """A tiny model and schedule (as tests/e2e/test_custom_dataset.py) on a dataset of ``layout``."""
    return [f"data.dataset={layout}", f"data.root={root}", "data.train_split=train", "data.val_split=val",
            "model.num_classes=auto", "model.backbone.width_mult=0.25", "model.encoder.channels=32",
            "model.encoder.mid_channels=8", "data.train_min_size=[64]", "data.train_max_size=64",
            "data.test_min_size=64", "data.test_max_size=64", "data.aspect_ratio_grouping=true",
            "solver.batch_size=2", "solver.reference_batch_size=2", "solver.warmup_iters=1"]


@pytest.mark.parametrize("layout", ["yolo", "voc_xml"])
def test_train_three_steps_and_eval_per_class_by_name(tmp_path, coco_tiny, capsys, layout):
    import eval as eval_script
    from engine.trainer import RunOptions, fit

    root = write_yolo_set(tmp_path / "data") if layout == "yolo" else write_voc_xml_set(tmp_path / "data")
    torch.set_num_threads(1)
    cfg = load_config(REPO / "config/small_cpu.yaml", _tiny(layout, root))
    record = fit(cfg, RunOptions(tmp_path / "run", device=torch.device("cpu"), max_iter=3, progress=False))
    assert record["iteration"] == 3 and "AP50" in record and "APs" in record  # the COCO metrics
    ckpt = torch.load(tmp_path / "run" / "last.pth", map_location="cpu", weights_only=True)
    names = coco_names() if layout == "yolo" else _names_used()
    assert ckpt["class_names"] == names and ckpt["config"]["model"]["num_classes"] == len(names)

    capsys.readouterr()
    metrics = eval_script.main(["--weight", str(tmp_path / "run" / "last.pth"), "--out", str(tmp_path / "m.json"),
                                "--save_results", str(tmp_path / "dets.json")])
    table = capsys.readouterr().err
    shown = [line.split()[0] for line in table.splitlines() if line.split()[:1] in (["person"], ["car"], ["bus"])]
    assert shown == (["person", "car", "bus"] if layout == "yolo" else ["bus", "car", "person"])  # label order
    report = json.loads((tmp_path / "m.json").read_text())
    assert list(report["per_class"]) == names and {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(metrics)

    # the saved detections, scored again without the model against the same in-memory ground truth
    again = eval_script.main(["--config", str(tmp_path / "run" / "config.yaml"), "--results",
                              str(tmp_path / "dets.json"), "--out", str(tmp_path / "m2.json")])
    assert again["AP"] == pytest.approx(metrics["AP"]) and again["AP50"] == pytest.approx(metrics["AP50"])


def test_every_image_in_a_training_batch_has_its_size(tmp_path, coco_tiny):
    """The aspect-ratio grouping sampler reads image_sizes: from the headers (yolo) or the XML <size> (voc_xml)."""
    from data.sampler import image_sizes

    yolo_cfg = load_config(REPO / "config/small_cpu.yaml", _tiny("yolo", write_yolo_set(tmp_path / "y")))
    voc_root = write_voc_xml_set(tmp_path / "v")
    for xml in (voc_root / "train").glob("*.xml"):  # no <size>: the header gives it
        xml.write_text(xml.read_text().replace("<size>", "<nosize>").replace("</size>", "</nosize>"))
    voc_cfg = load_config(REPO / "config/small_cpu.yaml", _tiny("voc_xml", voc_root))
    for cfg in (yolo_cfg, voc_cfg):
        ds = build_dataset(cfg, "train", is_train=True)
        sizes = image_sizes(ds)
        for i in range(len(ds)):
            assert tuple(sizes[i]) == tuple(int(v) for v in ds[i][1]["orig_size"])  # (h, w) as decoded


def test_rounding_is_not_reported_as_clipping_and_missing_label_files_are(tmp_path, caplog):
    """Six-decimal YOLO coordinates reach a hair outside the image (COCO boxes to the border): no clipping is
    reported; a box 10 px out is, under the YOLO reader's logger; an image without a label file is logged with
    where its label file was looked for."""
    data_yaml = write_yolo_set(tmp_path / "yolo", splits=("val",))
    with caplog.at_level("INFO"):
        YOLODetection(data_yaml, "val", filter_empty=False)
    assert not [r for r in caplog.records if "clipped" in r.getMessage()]
    labels = tmp_path / "yolo" / "labels" / "val"
    (labels / "000000404484.txt").write_text("0 0.5 0.5 1.0625 0.5\n")  # 320 px wide image: 10 px out each side
    (labels / "000000333956.txt").unlink()
    caplog.clear()
    with caplog.at_level("INFO"):
        YOLODetection(data_yaml, "val", filter_empty=False)
    (clipped,) = [r for r in caplog.records if "clipped" in r.getMessage()]
    assert clipped.name == "data.yolo" and "clipped 1 box(es) reaching more than 1 px outside" in clipped.getMessage()
    (missing,) = [r for r in caplog.records if "no_label_file" in r.getMessage()]
    assert f"no label file {labels / '000000333956.txt'} (a background image)" in missing.getMessage()
