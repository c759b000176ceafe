"""Tests for evaluation/coco_eval.py on the real COCO annotations shipped in tests/assets.

The independent truth is pycocotools itself, called directly here
(COCO / loadRes / COCOeval), never through evaluation.coco_eval.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from evaluation.coco_eval import (
    BACKENDS,
    STAT_NAMES,
    CocoResult,
    evaluate_coco,
    load_detections,
    summary_table,
    validate_detections,
    write_metrics_json,
)
from tests.conftest import COCO_JSON

FCE_TOL = 1e-6  # faster-coco-eval vs pycocotools


@pytest.fixture(scope="module")
def gt_path(coco_tiny) -> Path:
    return COCO_JSON


@pytest.fixture(scope="module")
def gt(gt_path) -> dict:
    with open(gt_path) as f:
        return json.load(f)


def truth(gt_path: Path, dets: list[dict]):
    """pycocotools run directly: returns the COCOeval after summarize()."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO(str(gt_path))
        d = g.loadRes(copy.deepcopy(dets))
        E = COCOeval(g, d, iouType="bbox")
        E.evaluate()
        E.accumulate()
        E.summarize()
    return E


def truth_per_class(E) -> tuple[dict, dict, dict]:
    """Per-class AP, AP50 and IoU=.5 PR curve straight from E.eval['precision']."""
    names = {c["id"]: c["name"] for c in E.cocoGt.dataset["categories"]}
    prec = E.eval["precision"]  # [T=10, R=101, K, A=4, M=3]
    ap, ap50, curves = {}, {}, {}
    for k, cid in enumerate(E.params.catIds):
        pk = prec[:, :, k, 0, 2]
        ap[names[cid]] = float(pk[pk > -1].mean()) if (pk > -1).any() else -1.0
        ap50[names[cid]] = float(pk[0][pk[0] > -1].mean()) if (pk[0] > -1).any() else -1.0
        if (pk[0] > -1).all():
            curves[names[cid]] = pk[0]
    return ap, ap50, curves


def perturbed_detections(gt: dict, seed: int = 0) -> list[dict]:
    """Gt-derived detections with jitter, drops, duplicates, FPs, random scores."""
    rng = np.random.default_rng(seed)
    imgs = {im["id"]: im for im in gt["images"]}
    cat_ids = [c["id"] for c in gt["categories"]]
    dets = []
    for a in gt["annotations"]:
        if a["iscrowd"] or rng.random() < 0.25:  # drop ~25% of the objects
            continue
        x, y, w, h = a["bbox"]
        for _ in range(1 + int(rng.random() < 0.15)):  # ~15% duplicated
            j = rng.normal(0.0, 0.12, 4) * np.array([w, h, w, h])
            dets.append({
                "image_id": a["image_id"],
                "category_id": a["category_id"],
                "bbox": [x + j[0], y + j[1], max(w + j[2], 0.0), max(h + j[3], 0.0)],
                "score": float(rng.random()),
            })
    ids = sorted(imgs)
    for _ in range(4 * len(ids)):  # random false positives (some with a random class), ~4 per image
        im = imgs[ids[rng.integers(len(ids))]]
        w, h = rng.uniform(4, im["width"] / 2), rng.uniform(4, im["height"] / 2)
        dets.append({
            "image_id": im["id"],
            "category_id": int(cat_ids[rng.integers(len(cat_ids))]),
            "bbox": [rng.uniform(0, im["width"] - w), rng.uniform(0, im["height"] - h), w, h],
            "score": float(rng.random()),
        })
    return dets


def assert_matches_truth(res: CocoResult, E, tol: float) -> None:
    assert list(res.stats) == list(STAT_NAMES)
    for name, want in zip(STAT_NAMES, E.stats[:12]):
        got = res.stats[name]
        assert isinstance(got, float)
        assert abs(got - float(want)) <= tol, (name, got, want)
    ap, ap50, curves = truth_per_class(E)
    assert res.per_class.keys() == ap.keys()
    for n in ap:
        assert abs(res.per_class[n] - ap[n]) <= tol, n
        assert abs(res.per_class_ap50[n] - ap50[n]) <= tol, n
    assert res.pr_curves.keys() == curves.keys()
    for n, p in curves.items():
        r, q = res.pr_curves[n]
        assert r.shape == q.shape == (101,)
        np.testing.assert_allclose(r, np.linspace(0, 1, 101), atol=1e-12)
        np.testing.assert_allclose(q, p, atol=tol, rtol=0)
    # mean curve averages the class curves; its mean is AP50
    mr, mp = res.mean_pr_curve
    assert abs(float(np.mean(mp)) - float(E.stats[1])) <= max(tol, 1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_perturbed_detections_match_pycocotools(gt_path, gt, backend):
    dets = perturbed_detections(gt, seed=0)
    E = truth(gt_path, dets)
    # sanity: the perturbations actually hurt
    assert 0.1 < E.stats[0] < 0.9 and 0.1 < E.stats[1] < 1.0
    res = evaluate_coco(gt_path, dets, backend=backend)
    # same code path for pycocotools -> bit-exact; faster-coco-eval -> 1e-6
    assert_matches_truth(res, E, tol=0.0 if backend == "pycocotools" else FCE_TOL)
    assert res.num_images == len(gt["images"]) and res.num_detections == len(dets)
    assert res.backend == backend


def test_backends_agree_on_second_seed_and_from_file(gt_path, gt, tmp_path):
    dets = perturbed_detections(gt, seed=123)
    f = tmp_path / "dets.json"
    f.write_text(json.dumps(dets))
    a = evaluate_coco(str(gt_path), f, backend="pycocotools")
    b = evaluate_coco(gt_path, str(f), backend="faster-coco-eval")
    for n in STAT_NAMES:
        assert abs(a.stats[n] - b.stats[n]) <= FCE_TOL, n
    for n in a.per_class:
        assert abs(a.per_class[n] - b.per_class[n]) <= FCE_TOL, n


def test_gt_as_coco_object_and_dict(gt_path, gt):
    from pycocotools.coco import COCO

    dets = perturbed_detections(gt, seed=1)
    want = truth(gt_path, dets).stats[:12]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_path))
    for backend in BACKENDS:
        for g in (coco, copy.deepcopy(gt)):
            res = evaluate_coco(g, dets, backend=backend)
            np.testing.assert_allclose([res.stats[n] for n in STAT_NAMES], want, atol=FCE_TOL, rtol=0)


def test_input_detections_not_mutated(gt_path, gt):
    dets = perturbed_detections(gt, seed=2)[:50]
    before = copy.deepcopy(dets)
    for backend in BACKENDS:
        evaluate_coco(gt_path, dets, backend=backend)
    assert dets == before


def perfect_detections(gt: dict, score: float = 1.0) -> list[dict]:
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": score}
        for a in gt["annotations"]
        if not a["iscrowd"]
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_perfect_detections(gt_path, gt, backend):
    dets = perfect_detections(gt)
    E = truth(gt_path, dets)
    res = evaluate_coco(gt_path, dets, backend=backend)
    assert_matches_truth(res, E, tol=0.0 if backend == "pycocotools" else FCE_TOL)
    # pycocotools (checked, not assumed) says AP = 1 for every AP and AR100
    # entry; AR1/AR10 stay < 1 because images hold up to 31 objects.
    for n in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "ARs", "ARm", "ARl"):
        assert E.stats[STAT_NAMES.index(n)] == 1.0
        assert res.stats[n] == 1.0, n
    assert res.stats["AR1"] < 1.0
    classes_with_gt = {c["name"] for c in gt["categories"]
                       if any(a["category_id"] == c["id"] and not a["iscrowd"] for a in gt["annotations"])}
    # per class: pycocotools' precision tp / (tp + fp + eps) is 1 - 2e-16 for
    # tp = 1, so a class mean can come out as 0.9999999999999998
    for n, v in res.per_class.items():
        if n in classes_with_gt:
            assert v == pytest.approx(1.0, abs=1e-12), n
        else:
            assert v == -1.0, n
    assert set(res.pr_curves) == classes_with_gt
    np.testing.assert_allclose(res.mean_pr_curve[1], np.ones(101), atol=1e-12, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_detections_on_crowd_regions_are_not_false_positives(gt_path, gt, backend):
    crowd = [a for a in gt["annotations"] if a["iscrowd"]]
    assert crowd, "tests/assets is expected to contain crowd boxes"
    # crowd-region detections score HIGHER than every true positive, so
    # they would pull precision below 1 if they counted as false positives.
    perfect = perfect_detections(gt, score=0.9)
    on_crowd = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": 0.95}
        for a in crowd
    ]
    dets = perfect + on_crowd
    E = truth(gt_path, dets)
    res = evaluate_coco(gt_path, dets, backend=backend)
    assert_matches_truth(res, E, tol=0.0 if backend == "pycocotools" else FCE_TOL)
    assert res.stats["AP"] == 1.0 and res.stats["AP50"] == 1.0
    # control: the same boxes under another class (bicycle; the crowds are persons) are real false positives
    bicycle = next(c["id"] for c in gt["categories"] if c["name"] == "bicycle")
    relabelled = [dict(d, category_id=bicycle) for d, a in zip(on_crowd, crowd) if a["category_id"] != bicycle]
    assert relabelled
    dets2 = perfect + relabelled
    E2 = truth(gt_path, dets2)
    res2 = evaluate_coco(gt_path, dets2, backend=backend)
    assert_matches_truth(res2, E2, tol=0.0 if backend == "pycocotools" else FCE_TOL)
    assert res2.per_class["bicycle"] < 1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_detections_give_zeros(gt_path, gt, backend):
    res = evaluate_coco(gt_path, [], backend=backend)
    # tests/assets has small, medium and large objects, so every metric is
    # defined and must be exactly 0.0 (undefined ones would stay -1).
    assert res.stats == {n: 0.0 for n in STAT_NAMES}
    assert all(v in (0.0, -1.0) for v in res.per_class.values())
    assert any(v == 0.0 for v in res.per_class.values())
    assert res.num_detections == 0
    assert np.all(res.mean_pr_curve[1] == 0.0)


def _base_det(gt):
    a = next(a for a in gt["annotations"] if not a["iscrowd"])
    return {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5}


def test_bad_inputs_raise_with_the_problem_named(gt_path, gt, tmp_path):
    ok = _base_det(gt)
    validate_detections([ok], gt_path)  # fine
    validate_detections([dict(ok, bbox=[1, 2, 0, 0])], gt)  # zero size is allowed
    # numpy scalars / arrays and tuples are accepted (and evaluated as floats)
    np_det = dict(ok, image_id=np.int64(ok["image_id"]), category_id=np.int32(ok["category_id"]),
                  bbox=np.array([1, 2, 3, 4], np.float32), score=np.float32(0.5))
    validate_detections([np_det, dict(ok, bbox=(1, 2, 3, 4))], gt)
    assert evaluate_coco(gt_path, [np_det]).num_detections == 1

    cases = [
        ({"a": 1}, "expected a list"),
        ([1], "not a dict"),
        ([{k: v for k, v in ok.items() if k != "score"}], "missing key(s) ['score']"),
        ([dict(ok, bbox=[1, 2, 3])], "4 numbers"),
        ([dict(ok, score="high")], "score must be a number"),
        ([dict(ok, score=True)], "score must be a number"),
        ([dict(ok, image_id=1.5)], "image_id must be an integer"),
        ([dict(ok, image_id=987654321), dict(ok, image_id=11)], "not in the ground truth: 11, 987654321"),
        ([dict(ok, category_id=12)], "category id(s) are not in the ground truth"),  # 12 unused in COCO
        ([ok, dict(ok, bbox=[1, float("nan"), 3, 4])], "NaN/inf"),
        ([dict(ok, score=float("inf"))], "NaN/inf"),
        ([ok, dict(ok, bbox=[1, 2, -3, 4])], "negative width/height"),
    ]
    for dets, msg in cases:
        with pytest.raises(ValueError) as ei:
            validate_detections(dets, gt_path, source="my_results.json")
        assert "my_results.json" in str(ei.value)
        assert msg in str(ei.value), str(ei.value)
        if isinstance(dets, list):
            for backend in BACKENDS:
                with pytest.raises(ValueError, match=r"^detections: "):
                    evaluate_coco(gt_path, dets, backend=backend)

    many = [dict(ok, image_id=10**9 + i) for i in range(9)]
    with pytest.raises(ValueError, match=r"9 image id\(s\).*\.\.\. \(9 in total\)"):
        validate_detections(many, gt_path)

    bad_file = tmp_path / "bad.json"
    bad_file.write_text(json.dumps({"annotations": []}))
    with pytest.raises(ValueError, match="bad.json.*json list"):
        load_detections(bad_file)
    dets_file = tmp_path / "nan_dets.json"
    dets_file.write_text(json.dumps([dict(ok, bbox=[1, 2, 3, -1])]))
    with pytest.raises(ValueError, match="nan_dets.json: 1 detection.*negative"):
        evaluate_coco(gt_path, dets_file)
    with pytest.raises(ValueError, match="backend"):
        evaluate_coco(gt_path, [ok], backend="detectron")
    with pytest.raises(ValueError, match="iou_type"):
        evaluate_coco(gt_path, [ok], iou_type="segm")


def test_metrics_json_and_summary_table(gt_path, gt, tmp_path):
    res = evaluate_coco(gt_path, perturbed_detections(gt, seed=3))
    out = tmp_path / "sub" / "metrics.json"
    write_metrics_json(res, out)
    m = json.loads(out.read_text())
    assert m["stats"] == res.stats
    assert m["per_class"] == res.per_class and m["per_class_ap50"] == res.per_class_ap50
    table = summary_table(res)
    lines = table.splitlines()
    assert any(line.startswith("person ") for line in lines)
    assert any(line.startswith("mean ") for line in lines)
    rows = [line for line in lines if line.startswith(("person", "traffic light", "mean"))]
    assert len({len(r) for r in rows}) == 1  # aligned columns
    # the rows are the classes of the split: those with (non-crowd) gt in the json; a line counts the others
    names = {c["id"]: c["name"] for c in gt["categories"]}
    present = {names[a["category_id"]] for a in gt["annotations"] if not a["iscrowd"]}
    listed = lines[lines.index(next(line for line in lines if line.startswith("class "))) + 2:-3]
    assert sorted(line.rsplit(None, 2)[0] for line in listed) == sorted(present)
    assert lines[-1] == f"({80 - len(present)} of the 80 classes have no ground truth in this split: not listed)"
    assert "hair drier" not in table and "n/a" not in table
    assert math.isclose(float(lines[-2].split()[-2]), round(100 * res.stats["AP"], 1))
