"""The official data protocol: one image per process in evaluation, grouped training batches, unrounded detections;
every image scored once, an unreadable one left out of the ground truth."""
from __future__ import annotations

import json

import pytest
import torch

from config import load_config
from data.build import build_test_loader
from evaluation.evaluator import ScoreOptions, predict, score_coco, to_coco_results
from tests.conftest import COCO_SPLIT, REPO
from tests.helpers import coco_with_a_broken_image

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


def test_an_unreadable_image_is_predicted_never_and_left_out_of_the_ground_truth(coco_tiny, tmp_path, caplog):
    """tests/assets with one image replaced by bytes that are no image, and a model that answers every image it
    is shown with that image's annotated boxes (found by its pixels): every image id comes back once, the broken
    one unpredicted, and the others score AP 100 (pycocotools) with the broken one out of the ground truth."""
    root, ds, truth = coco_with_a_broken_image(coco_tiny, tmp_path, "000000223747.jpg")
    broken = root / COCO_SPLIT / "000000223747.jpg"

    class Exact(torch.nn.Module):
        def forward(self, images, output_sizes=None):
            answers = [truth[im.permute(1, 2, 0).numpy().tobytes()] for im in images]
            return [{"boxes": torch.from_numpy(a["boxes"]).float(), "scores": torch.ones(len(a["boxes"])),
                     "labels": torch.from_numpy(a["labels"])} for a in answers]

    with caplog.at_level("WARNING"):
        predictions = predict(Exact(), build_test_loader(ds, 4, 0), torch.device("cpu"), progress=False)
    ids = [p["image_id"] for p in predictions]
    assert sorted(ids) == sorted(ds.ids) and len(set(ids)) == len(ids) == 7
    (bad,) = [p for p in predictions if "unreadable" in p]
    assert bad["image_id"] == 223747 and len(bad["boxes"]) == 0 and bad["file_name"] == str(broken)
    assert any("not predicted, and left out of the ground truth" in r.getMessage() for r in caplog.records)
    assert not any("returning another sample" in r.getMessage() for r in caplog.records)

    echoed = []
    metrics, result = score_coco(ds, predictions, ScoreOptions(metrics_path=tmp_path / "metrics.json",
                                                               echo=echoed.append, pr_curve=False))
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    assert metrics["images_unreadable"] == 1 and result.num_images == 6
    assert echoed[0].startswith("1 of 7 images could not be read: not predicted, and left out of the ground truth")
    assert str(broken) in echoed[0]
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["num_images"] == 6 and [u["image_id"] for u in written["unreadable_images"]] == [223747]
    # without the rule (the image scored as one with no detections) its 3 objects are misses: AP below 1
    scored_anyway = [{k: v for k, v in p.items() if k != "unreadable"} for p in predictions]
    assert score_coco(ds, scored_anyway, ScoreOptions(echo=lambda s: None))[0]["AP"] < 0.99
