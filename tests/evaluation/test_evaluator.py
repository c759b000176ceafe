"""The official data protocol: one image per process in evaluation, grouped training batches, unrounded detections."""
from __future__ import annotations

import pytest
import torch

from config import load_config
from tests.conftest import REPO
from evaluation.evaluator import to_coco_results

OFFICIAL = ["yolof_r50_c5_1x", "yolof_r50_dc5_1x", "yolof_r101_c5_1x", "yolof_r101_dc5_1x", "yolof_x101_64x4d_c5_1x"]


@pytest.mark.parametrize("preset", OFFICIAL)
def test_official_presets_evaluate_one_image_per_process_and_group_by_aspect(preset):
    cfg = load_config(REPO / "config" / f"{preset}.yaml")
    assert cfg.data.test_batch_size == 1
    assert cfg.data.aspect_ratio_grouping


def test_detections_are_written_unrounded():
    boxes = torch.tensor([[10.123456, 20.987654, 110.5555555, 70.0000001]], dtype=torch.float64)
    pred = {"image_id": 7, "boxes": boxes, "scores": torch.tensor([0.123456789], dtype=torch.float64),
            "labels": torch.tensor([1])}
    (res,) = to_coco_results([pred], {0: 1, 1: 3})
    assert res["image_id"] == 7 and res["category_id"] == 3
    assert res["bbox"] == [10.123456, 20.987654, 110.5555555 - 10.123456, 70.0000001 - 20.987654]
    assert res["score"] == 0.123456789


def test_every_dataset_is_scored_by_a_metric_and_named_by_the_scripts():
    """data.build.DATASETS is the one list: each entry names a scorer of evaluation.evaluator.METRICS, and
    eval.py / test.py -d offer exactly its names; eval.py --backend and --amp offer their families' names."""
    import importlib.util

    import eval as eval_script
    from data.build import DATASETS
    from evaluation.coco_eval import BACKENDS
    from evaluation.evaluator import METRICS
    from utils.precision import AMP_MODES

    spec = importlib.util.spec_from_file_location("test_script", REPO / "test.py")  # "test" is the stdlib's
    test_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(test_script)
    assert {f.metric for f in DATASETS.values()} <= set(METRICS)
    assert DATASETS["voc"].metric == "voc" and DATASETS["coco"].metric == DATASETS["synthetic"].metric == "coco"
    for name in DATASETS:
        assert eval_script.parse_args(["-d", name]).dataset == name
        assert test_script.parse_args(["-w", "x.pth", "-d", name]).dataset == name
    for parse in (eval_script.parse_args, lambda a: test_script.parse_args(["-w", "x.pth", *a])):
        with pytest.raises(SystemExit):  # argparse: not one of the choices
            parse(["-d", "imagenet"])
    assert [eval_script.parse_args(["--backend", b]).backend for b in BACKENDS] == list(BACKENDS)
    assert [eval_script.parse_args(["--amp", a]).amp for a in AMP_MODES] == list(AMP_MODES)
