"""models/finetune.py: a trained YOLOF as the start of a run with other classes (train.init_from, --finetune).

The start is the official R50-C5 COCO model as a user has it: seeded official-layout weights
(tests/fixtures/golden/make_weights_generic.py) converted by tools/convert_official.py, which stores COCO's class
names. The truth: the start's own tensors, row by row, and COCO's names from tests/assets' annotation file."""
from __future__ import annotations

import logging
import math

import pytest
import torch

from config import load_config
from models import build_model
from models.finetune import CLASSIFIER, canonical_class_name, init_from_checkpoint, match_classes
from tests.conftest import REPO
from tests.converted_checkpoint import write_official_r50
from tests.layouts import coco_names
from tools.convert_official import convert_checkpoint
from utils.checkpoint import CheckpointError, save_checkpoint

W, B = CLASSIFIER
PRIOR_BIAS = torch.tensor(-math.log((1 - 0.01) / 0.01), dtype=torch.float32)  # model.decoder.prior_prob 0.01
R50 = REPO / "config" / "yolof_r50_c5_1x.yaml"
SMALL = ["model.backbone.width_mult=0.125", "model.encoder.channels=16", "model.encoder.mid_channels=8",
         "model.backbone.weights=none"]


@pytest.fixture(scope="module")
def coco_start(tmp_path_factory):
    """A converted official COCO checkpoint (80 classes, COCO's names)."""
    tmp = tmp_path_factory.mktemp("coco_start")
    convert_checkpoint(write_official_r50(tmp / "official.pth", seed=5), tmp / "ours.pth")
    return tmp / "ours.pth"


def _fresh_model(overrides):
    torch.manual_seed(0)
    model = build_model(load_config(R50, {"model.backbone.weights": "none", **overrides}))
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def test_the_converter_stores_coco_names(coco_start):
    assert torch.load(coco_start, weights_only=True)["class_names"] == coco_names()


def test_coco_weights_to_three_classes_keep_the_rows_of_the_classes_coco_knows(coco_start, caplog):
    start = torch.load(coco_start, weights_only=True)["model"]
    model, fresh = _fresh_model({"model.num_classes": 3})
    with caplog.at_level(logging.INFO, logger="models.finetune"):
        report = init_from_checkpoint(model, coco_start, ["motorbike", "person", "widget"])
    state = model.state_dict()
    motorcycle, person = coco_names().index("motorcycle"), coco_names().index("person")
    assert report.mapped == {0: motorcycle, 1: person} and report.fresh == [2]
    for a in range(5):  # 5 anchors: channel a * K + k is class k of anchor a
        for k, j in ((0, motorcycle), (1, person)):
            assert torch.equal(state[W][a * 3 + k], start[W][a * 80 + j])
            assert torch.equal(state[B][a * 3 + k], start[B][a * 80 + j])
        assert torch.equal(state[W][a * 3 + 2], fresh[W][a * 3 + 2])  # the model's own initialisation
        assert torch.equal(state[B][a * 3 + 2], PRIOR_BIAS)
    others = [k for k in start if k not in CLASSIFIER]
    assert len(others) == len(state) - 2
    assert all(torch.equal(state[k], start[k]) for k in others)
    lines = [r.getMessage() for r in caplog.records if r.name == "models.finetune"]
    assert len(lines) == 3
    assert f"loaded {len(start) - 2} of its {len(start)} tensors as they are" in lines[0]
    assert "kept for 2 of 3 classes" in lines[1] and "motorbike <- motorcycle, person" in lines[1]
    assert "re-initialised for 1 of 3 classes" in lines[2] and lines[2].endswith(": widget")


@pytest.mark.parametrize("override, first", [
    ({"model.backbone.name": "resnet101"}, "backbone.layer3.6.conv1.weight (256, 1024, 1, 1) is not in the checkpoint"),
    ({"model.anchors.sizes": [32, 64, 128, 256]}, "decoder.bbox_pred.weight: checkpoint (20, 512, 3, 3) vs model "
                                                  "(16, 512, 3, 3)"),
])
def test_another_backbone_or_other_anchors_refuse_in_one_line(coco_start, override, first):
    model, _ = _fresh_model({"model.num_classes": 3, **override})
    with pytest.raises(CheckpointError) as e:
        init_from_checkpoint(model, coco_start, ["car", "person", "widget"])
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"{coco_start} does not fit this model beyond its classifier")
    assert first in message


def test_a_start_that_reads_its_input_otherwise_refuses(coco_start):
    """The official weights are caffe-style BGR; torchvision's R50 preset (pytorch-style, RGB) has the same
    tensors, so only the stored config tells them apart."""
    cfg = load_config(REPO / "config" / "yolof_r50_c5_1x_torchvision.yaml",
                      {"model.num_classes": 3, "model.backbone.weights": "none"})
    with pytest.raises(CheckpointError) as e:
        init_from_checkpoint(build_model(cfg), coco_start, ["car", "person", "widget"], model_cfg=cfg.model)
    assert str(e.value) == (f"{coco_start} was trained with model.input_format=BGR (this run: RGB), "
                            f"model.backbone.style=caffe (this run: pytorch): its weights read the input that way; "
                            f"fine-tune with its settings (the config stored in it)")
    r50 = load_config(R50, {"model.num_classes": 3, "model.backbone.weights": "none"})
    assert init_from_checkpoint(build_model(r50), coco_start, ["car", "person", "x"], model_cfg=r50.model).mapped


def _small_start(tmp_path, class_names, seed=1):
    torch.manual_seed(seed)
    cfg = load_config(REPO / "config/small_cpu.yaml", [*SMALL, f"model.num_classes={len(class_names) or 4}"])
    model = build_model(cfg)
    with torch.no_grad():  # a trained classifier differs from a fresh one
        for p in model.decoder.cls_score.parameters():
            p.normal_()
    path = tmp_path / "start.pth"
    save_checkpoint(path, {"model": model.state_dict(), **({"class_names": class_names} if class_names else {})})
    return path, model.state_dict()


def _small_model(num_classes):
    torch.manual_seed(0)
    model = build_model(load_config(REPO / "config/small_cpu.yaml", [*SMALL, f"model.num_classes={num_classes}"]))
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def test_the_same_classes_load_as_a_strict_load(tmp_path):
    path, start = _small_start(tmp_path, ["a", "b", "c", "d"])
    model, _ = _small_model(4)
    report = init_from_checkpoint(model, path, ["a", "b", "c", "d"])
    assert report.fresh == [] and all(torch.equal(model.state_dict()[k], v) for k, v in start.items())


def test_a_start_without_names_keeps_rows_by_position_only_when_the_counts_agree(tmp_path):
    path, start = _small_start(tmp_path, [])
    model, _ = _small_model(4)
    report = init_from_checkpoint(model, path, ["w", "x", "y", "z"])
    assert report.by == "position" and report.mapped == {0: 0, 1: 1, 2: 2, 3: 3}
    assert torch.equal(model.state_dict()[W], start[W])
    model, fresh = _small_model(2)
    report = init_from_checkpoint(model, path, ["x", "y"])
    assert report.mapped == {} and report.fresh == [0, 1]
    assert torch.equal(model.state_dict()[W], fresh[W]) and torch.equal(model.state_dict()[B], PRIOR_BIAS.expand(10))


def test_reordered_classes_take_their_own_rows(tmp_path):
    path, start = _small_start(tmp_path, ["a", "b", "c", "d"])
    model, _ = _small_model(3)
    init_from_checkpoint(model, path, ["d", "new", "b"])
    state = model.state_dict()
    for a in range(5):
        assert torch.equal(state[W][a * 3], start[W][a * 4 + 3])
        assert torch.equal(state[B][a * 3 + 2], start[B][a * 4 + 1])
        assert torch.equal(state[B][a * 3 + 1], PRIOR_BIAS)


def test_names_are_matched_through_case_separators_and_the_alias_table():
    assert canonical_class_name("Dining_Table") == canonical_class_name("diningtable") == "dining table"
    assert canonical_class_name("TV-Monitor") == canonical_class_name("tvmonitor") == "tv"
    assert canonical_class_name("aeroplane") == "airplane" and canonical_class_name("Motorbike") == "motorcycle"
    assert canonical_class_name("traffic_light") == "traffic light" and canonical_class_name("widget") == "widget"
    voc = ["aeroplane", "bicycle", "diningtable", "pottedplant", "sofa", "tvmonitor", "motorbike", "person"]
    coco = coco_names()
    assert [coco[j] for j in match_classes(voc, coco).values()] == [
        "airplane", "bicycle", "dining table", "potted plant", "couch", "tv", "motorcycle", "person"]
    assert match_classes(["cat", "Cat"], ["cat"]) == {0: 0}  # a start class serves one run class
