"""Tests for evaluation/voc_eval.py: hand-computed devkit cases + a run on the real COCO annotations of tests/assets."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from evaluation.voc_eval import (
    VocResult,
    evaluate_voc,
    iou_devkit,
    read_voc_results,
    summary_table,
    to_devkit_coords,
    voc_ap,
    write_metrics_json,
    write_voc_results,
)
from tests.conftest import COCO_JSON



# ----------------------------------------------------------------- IoU / coords
def test_iou_uses_devkit_one_based_inclusive_pixels():
    # (1,1,10,10): 10 x 10 = 100 px; (6,1,15,10): 10 x 10 = 100 px
    # intersection x 6..10 = 5 px, y 1..10 = 10 px -> 50; union 100+100-50 = 150
    assert iou_devkit((1, 1, 10, 10), [(6, 1, 15, 10)])[0] == pytest.approx(50 / 150)
    # identical boxes -> 1; disjoint (touching at no pixel) -> 0
    np.testing.assert_allclose(iou_devkit((1, 1, 10, 10), [(1, 1, 10, 10), (11, 1, 20, 10)]), [1.0, 0.0])
    # single-pixel box (5,5,5,5) has area 1, not 0
    assert iou_devkit((5, 5, 5, 5), [(5, 5, 5, 5)])[0] == 1.0


def test_to_devkit_coords():
    # 0-based continuous [0,10) x [0,10) covers pixels 1..10 (1-based)
    np.testing.assert_array_equal(to_devkit_coords([0, 0, 10, 10]), [1, 1, 10, 10])
    np.testing.assert_array_equal(
        to_devkit_coords([[0.0, 5.0, 20.0, 30.0], [2.5, 3.5, 4.0, 8.0]]), [[1, 6, 20, 30], [3.5, 4.5, 4, 8]]
    )
    # the devkit width x2 - x1 + 1 equals the continuous width x2 - x1
    b = to_devkit_coords([3.0, 4.0, 13.0, 24.0])
    assert (b[2] - b[0] + 1, b[3] - b[1] + 1) == (10.0, 20.0)
    with pytest.raises(ValueError):
        to_devkit_coords([1, 2, 3])


# ----------------------------------------------------------------------- voc_ap
# curve used below: npos = 5, detections TP, TP, FP, TP, TP ->
#   recall    = [.2, .4, .4, .6, .8]
#   precision = [1, 1, 2/3, 3/4, 4/5]
REC = [0.2, 0.4, 0.4, 0.6, 0.8]
PREC = [1.0, 1.0, 2 / 3, 3 / 4, 4 / 5]


def test_voc_ap_11_point_hand_computed():
    # t = 0, .1, .2, .3, .4: some recall >= t has precision 1 -> 1 (5 values)
    # t = .5, .6, .7, .8: recalls .6/.8 qualify -> max(.75, .8) = .8 (4 values)
    # t = .9, 1.0: no recall reaches -> 0 (2 values)
    # AP = (5 * 1 + 4 * .8 + 0) / 11 = 8.2 / 11 = 0.745454...
    assert voc_ap(REC, PREC, use_07_metric=True) == pytest.approx(8.2 / 11, abs=1e-12)


def test_voc_ap_area_hand_computed():
    # mrec = [0, .2, .4, .4, .6, .8, 1], mpre = [0, 1, 1, 2/3, 3/4, 4/5, 0]
    # envelope (max to the right): [1, 1, 1, .8, .8, .8, 0]
    # recall steps: 0->.2 (p=1), .2->.4 (p=1), .4->.6 (p=.8), .6->.8 (p=.8), .8->1 (p=0)
    # AP = .2*1 + .2*1 + .2*.8 + .2*.8 + .2*0 = 0.72
    assert voc_ap(REC, PREC, use_07_metric=False) == pytest.approx(0.72, abs=1e-12)


def test_voc_ap_edge_cases():
    assert voc_ap([], [], True) == 0.0 and voc_ap([], [], False) == 0.0
    # full recall at precision 1 -> 1 in both metrics
    assert voc_ap([0.5, 1.0], [1.0, 1.0], True) == pytest.approx(1.0)
    assert voc_ap([0.5, 1.0], [1.0, 1.0], False) == pytest.approx(1.0)
    # float quirk of the python port's thresholds np.arange(0, 1.1, .1):
    # the 4th is 0.30000000000000004 > 0.3, so recall exactly .3 reaches only
    # t = 0, .1, .2 -> AP = 3 / 11 (exact decimal arithmetic would say 4 / 11)
    assert voc_ap([0.3], [1.0], True) == pytest.approx(3 / 11, abs=1e-12)
    # area metric: .3 * 1 = .3
    assert voc_ap([0.3], [1.0], False) == pytest.approx(0.3, abs=1e-12)
    with pytest.raises(ValueError):
        voc_ap([0.1, 0.2], [1.0], True)


# ---------------------------------------------------------------- evaluate_voc
G1 = (1, 1, 10, 10)
G2 = (21, 21, 30, 30)
FAR = (100, 100, 120, 120)


def ann(boxes, labels, difficult=None):
    return {"boxes": np.asarray(boxes, float).reshape(-1, 4), "labels": labels,
            "difficult": np.asarray(difficult if difficult is not None else [False] * len(labels))}


def test_difficult_gt_ignored_and_not_in_npos():
    anns = {"a": ann([G1, G2], ["cat", "cat"], [False, True])}
    dets = {"cat": [("a", 0.9, *G2), ("a", 0.8, *G1), ("a", 0.7, *FAR)]}
    r = evaluate_voc(dets, anns, ["cat"])
    # npos = 1 (G2 difficult). sorted: d(.9) on difficult -> ignored (tp 0, fp 0),
    # d(.8) TP, d(.7) FP -> cum tp [0,1,1], fp [0,0,1]
    # recall [0, 1, 1], precision [0/eps = 0, 1, .5]
    assert r.npos == {"cat": 1}
    rec, prec = r.pr_curves["cat"]
    np.testing.assert_allclose(rec, [0, 1, 1])
    np.testing.assert_allclose(prec, [0, 1, 0.5])
    # every t has recall >= t with precision 1 -> AP = 1 (both metrics)
    assert r.ap["cat"] == pytest.approx(1.0) and r.mAP == pytest.approx(1.0)
    assert evaluate_voc(dets, anns, ["cat"], use_07_metric=False).ap["cat"] == pytest.approx(1.0)
    # control: the same data with G2 not difficult -> npos 2, the .9 det is a TP:
    # tp [1,2,2], fp [0,0,1] -> recall [.5, 1, 1], precision [1, 1, 2/3] -> AP 1
    # and with G2 difficult but counted nowhere else, a det ONLY on G2 gives
    # no TP and no FP -> recall 0 -> AP 0
    r2 = evaluate_voc({"cat": [("a", 0.9, *G2)]}, anns, ["cat"])
    assert r2.ap["cat"] == 0.0
    np.testing.assert_allclose(r2.pr_curves["cat"][0], [0.0])


def test_duplicate_detection_is_false_positive():
    anns = {"a": ann([G1, G2], ["dog", "dog"])}
    dets = {"dog": [("a", 0.9, *G1), ("a", 0.8, 1, 1, 10, 9), ("a", 0.7, *G2)]}
    r = evaluate_voc(dets, anns, ["dog"])
    # d(.9) TP on G1; d(.8) best IoU also G1 (90/100) but G1 taken -> FP;
    # d(.7) TP on G2. tp [1,1,2], fp [0,1,1]
    # recall [.5, .5, 1], precision [1, .5, 2/3]
    rec, prec = r.pr_curves["dog"]
    np.testing.assert_allclose(rec, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(prec, [1.0, 0.5, 2 / 3])
    # 11-point: t = 0 .. .5 (6 values) -> 1; t = .6 .. 1 (5 values) -> 2/3
    # AP = (6 + 5 * 2/3) / 11 = (28/3) / 11 = 28/33
    assert r.ap["dog"] == pytest.approx(28 / 33, abs=1e-12)
    # area: envelope [1, 1, 2/3, 2/3, 0] on mrec [0, .5, .5, 1, 1]
    # AP = .5 * 1 + .5 * 2/3 = 5/6
    r10 = evaluate_voc(dets, anns, ["dog"], use_07_metric=False)
    assert r10.ap["dog"] == pytest.approx(5 / 6, abs=1e-12)


def test_iou_threshold_uses_one_based_arithmetic_and_strict_comparison():
    anns = {"a": ann([(1, 1, 4, 4)], ["car"])}
    # det (2,1,5,4): devkit inter x 2..4 = 3 px, y 4 px -> 12; union 16+16-12 = 20
    # IoU = .6 > .5 -> TP. (0-based continuous arithmetic would give
    # inter 2*3 = 6, union 9+9-6 = 12 -> .5, not > .5 -> FP.)
    r = evaluate_voc({"car": [("a", 0.5, 2, 1, 5, 4)]}, anns, ["car"])
    assert r.ap["car"] == pytest.approx(1.0)
    # IoU exactly .5: gt (1,1,10,10) = 100 px, det (1,1,10,5) = 50 px, inter 50,
    # union 100 -> .5. Python port (ovmax > .5): FP -> AP 0; MATLAB
    # VOCevaldet.m (ovmax >= .5): TP -> AP 1
    anns = {"a": ann([(1, 1, 10, 10)], ["car"])}
    dets = {"car": [("a", 0.5, 1, 1, 10, 5)]}
    assert evaluate_voc(dets, anns, ["car"]).ap["car"] == 0.0
    assert evaluate_voc(dets, anns, ["car"], strict_iou=False).ap["car"] == pytest.approx(1.0)
    # IoU 50/150 = 1/3 -> FP
    dets = {"car": [("a", 0.5, 6, 1, 15, 10)]}
    assert evaluate_voc(dets, anns, ["car"]).ap["car"] == 0.0


def test_stable_sort_on_tied_scores():
    # two dets with the same score: a FP listed first, then a TP. The stable
    # sort keeps that order: tp [0,1], fp [1,1] -> recall [0, 1], precision
    # [0, .5] -> 11-point AP = .5 (all t reach recall 1 at precision .5)
    anns = {"a": ann([G1], ["cat"])}
    r = evaluate_voc({"cat": [("a", 0.5, *FAR), ("a", 0.5, *G1)]}, anns, ["cat"])
    np.testing.assert_allclose(r.pr_curves["cat"][1], [0.0, 0.5])
    assert r.ap["cat"] == pytest.approx(0.5)
    # listed the other way round: precision [1, .5] -> AP 1
    r = evaluate_voc({"cat": [("a", 0.5, *G1), ("a", 0.5, *FAR)]}, anns, ["cat"])
    assert r.ap["cat"] == pytest.approx(1.0)


def test_class_without_gt_is_nan_and_left_out_of_map():
    anns = {"a": ann([G1], [0]), "b": ann(np.zeros((0, 4)), [])}  # int labels
    dets = {"cat": [("a", 0.9, *G1)], "dog": [("b", 0.9, *G1)]}
    r = evaluate_voc(dets, anns, ["cat", "dog"])
    assert r.ap["cat"] == pytest.approx(1.0)
    assert math.isnan(r.ap["dog"]) and "dog" not in r.pr_curves and r.npos["dog"] == 0
    assert r.mAP == pytest.approx(1.0)
    assert math.isnan(evaluate_voc({}, {"b": ann(np.zeros((0, 4)), [])}, ["cat"]).mAP)


def test_bad_inputs():
    anns = {"a": ann([G1], ["cat"])}
    with pytest.raises(ValueError, match="unknown image id 'zzz'"):
        evaluate_voc({"cat": [("zzz", 0.9, *G1)]}, anns, ["cat"])
    with pytest.raises(ValueError, match="unknown class"):
        evaluate_voc({"cow": []}, anns, ["cat"])
    with pytest.raises(ValueError, match="unknown class name 'cow'"):
        evaluate_voc({}, {"a": ann([G1], ["cow"])}, ["cat"])
    with pytest.raises(ValueError, match="out of range"):
        evaluate_voc({}, {"a": ann([G1], [3])}, ["cat"])
    with pytest.raises(ValueError, match="NaN/inf"):
        evaluate_voc({"cat": [("a", float("nan"), *G1)]}, anns, ["cat"])
    with pytest.raises(ValueError, match="must be"):
        evaluate_voc({"cat": [("a", 0.9, 1, 1, 10)]}, anns, ["cat"])


# --------------------------------------------------------------------- file I/O
def test_write_read_round_trip(tmp_path):
    dets = {
        "cat": [("000005", 0.9, 1.0, 2.0, 30.5, 40.0), ("000007", 0.125, 10.1, 20.2, 30.3, 40.4)],
        "dog": [],
        "person": [("2008_000123", 0.5, 1, 1, 500, 375)],
    }
    paths = write_voc_results(tmp_path, "test", dets)
    assert sorted(p.name for p in paths) == [
        "comp4_det_test_cat.txt", "comp4_det_test_dog.txt", "comp4_det_test_person.txt"]
    lines = (tmp_path / "comp4_det_test_cat.txt").read_text().splitlines()
    assert lines == ["000005 0.900 1.0 2.0 30.5 40.0", "000007 0.125 10.1 20.2 30.3 40.4"]
    back = read_voc_results(tmp_path, "test", ["cat", "dog", "person", "bird"])
    assert back["dog"] == [] and back["bird"] == []  # bird: missing file
    for cls in ("cat", "person"):
        assert len(back[cls]) == len(dets[cls])
        for got, want in zip(back[cls], dets[cls]):
            assert got[0] == want[0]  # ids stay strings ("000005" keeps its zeros)
            np.testing.assert_allclose(got[1:], want[1:], atol=1e-9)
    ints = read_voc_results(tmp_path, "test", ["cat"], image_id_type=int)
    assert ints["cat"][0][0] == 5


def test_read_malformed_line_names_file_and_line(tmp_path):
    (tmp_path / "comp4_det_val_cat.txt").write_text("a 0.9 1 1 5 5\n\nb 0.8 1 1 5\n")
    with pytest.raises(ValueError, match=r"comp4_det_val_cat\.txt:3: malformed line 'b 0\.8 1 1 5'"):
        read_voc_results(tmp_path, "val", ["cat"])
    (tmp_path / "comp4_det_val_cat.txt").write_text("a 0.9 1 1 5 five\n")
    with pytest.raises(ValueError, match=r"comp4_det_val_cat\.txt:1:"):
        read_voc_results(tmp_path, "val", ["cat"])
    with pytest.raises(ValueError, match="whitespace"):
        write_voc_results(tmp_path, "val", {"cat": [("a b", 0.9, 1, 1, 5, 5)]})


def test_metrics_json_and_table(tmp_path):
    r = VocResult(mAP=0.5, ap={"cat": 0.5, "dog": float("nan")}, pr_curves={}, npos={"cat": 3, "dog": 0})
    write_metrics_json(r, tmp_path / "m.json")
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["mAP"] == 0.5 and m["AP_cat"] == 0.5 and m["AP_dog"] is None and m["use_07_metric"] is True
    t = summary_table(r).splitlines()
    assert t[2].split() == ["cat", "50.0", "3"] and t[3].split() == ["dog", "n/a", "0"]
    assert t[-1].startswith("mAP ") and "50.0" in t[-1]
    assert len(t[2]) == len(t[3])


# ------------------------------------------------------- end to end on tests/assets
# VOC class -> COCO category name
VOC_FROM_COCO = {
    "aeroplane": "airplane", "bicycle": "bicycle", "bird": "bird", "boat": "boat", "bottle": "bottle",
    "bus": "bus", "car": "car", "cat": "cat", "chair": "chair", "cow": "cow", "diningtable": "dining table",
    "dog": "dog", "horse": "horse", "motorbike": "motorcycle", "person": "person",
    "pottedplant": "potted plant", "sheep": "sheep", "sofa": "couch", "train": "train", "tvmonitor": "tv",
}
VOC_CLASSES = list(VOC_FROM_COCO)


@pytest.fixture(scope="module")
def voc_like(coco_tiny):
    """VOC-style annotations from the COCO annotations of tests/assets (image ids as strings).

    Boxes: COCO [x, y, w, h] (0-based continuous) -> xyxy -> devkit coords.
    Difficult: every crowd box, and every 5th non-crowd box of each VOC class
    (in annotation order).
    """
    gt = json.loads(COCO_JSON.read_text())
    coco2voc = {c["id"]: v for c in gt["categories"] for v, n in VOC_FROM_COCO.items() if n == c["name"]}
    anns = {str(im["id"]): {"boxes": [], "labels": [], "difficult": []} for im in gt["images"]}
    seen = {v: 0 for v in VOC_FROM_COCO}
    for a in gt["annotations"]:
        if a["category_id"] not in coco2voc:
            continue
        x, y, w, h = a["bbox"]
        e = anns[str(a["image_id"])]
        e["boxes"].append(to_devkit_coords([x, y, x + w, y + h]))
        e["labels"].append(coco2voc[a["category_id"]])
        if a["iscrowd"]:
            e["difficult"].append(True)
        else:
            lab = coco2voc[a["category_id"]]
            e["difficult"].append(seen[lab] % 5 == 4)
            seen[lab] += 1
    for e in anns.values():
        e["boxes"] = np.asarray(e["boxes"], float).reshape(-1, 4)
        e["difficult"] = np.asarray(e["difficult"], bool)
    return anns


def gt_detections(anns, with_difficult=True, score=1.0):
    dets = {c: [] for c in VOC_CLASSES}
    for img in sorted(anns):
        e = anns[img]
        for b, lab, d in zip(e["boxes"], e["labels"], e["difficult"]):
            if d and not with_difficult:
                continue
            dets[lab].append((img, score, *b))
    return dets


def _difficult(anns, label):
    """(image id, devkit box) of the first difficult gt of ``label``."""
    return next((img, anns[img]["boxes"][k]) for img in sorted(anns) for k, (lab, d) in
                enumerate(zip(anns[img]["labels"], anns[img]["difficult"])) if lab == label and d)


def _npos(voc_like) -> dict:
    """Non-difficult ground-truth boxes per class."""
    npos = {c: 0 for c in VOC_CLASSES}
    for e in voc_like.values():
        for lab, d in zip(e["labels"], e["difficult"]):
            npos[lab] += int(not d)
    return npos


def test_voc_end_to_end_on_coco_tiny(voc_like, tmp_path):
    npos = _npos(voc_like)
    # 54 boxes of VOC classes, 9 difficult (2 person crowds + every 5th: 6 persons, 1 car)
    assert sum(npos.values()) == 45

    # perfect detections (difficult boxes too: they are ignored) -> mAP 1,
    # through a write / read round trip of the comp4 files
    write_voc_results(tmp_path, "val", gt_detections(voc_like))
    dets = read_voc_results(tmp_path, "val", VOC_CLASSES)
    for use07 in (True, False):
        r = evaluate_voc(dets, voc_like, VOC_CLASSES, use_07_metric=use07)
        assert r.npos == npos
        with_gt = [c for c in VOC_CLASSES if npos[c] > 0]
        assert r.mAP == pytest.approx(1.0, abs=1e-12)
        assert all(r.ap[c] == pytest.approx(1.0) for c in with_gt)
        assert all(math.isnan(r.ap[c]) for c in VOC_CLASSES if npos[c] == 0)


def test_voc_ap_of_a_perturbed_class_on_coco_tiny(voc_like):
    npos = _npos(voc_like)
    # perturbation on class X = car, with k kept out of n = npos["car"]
    # (n = 8 on tests/assets: 9 cars, the 5th marked difficult).
    # 1) keep every other non-difficult car (indices 0, 2, 4, ...): all are TPs,
    #    k = ceil(n / 2) of them (4), precision 1 up to recall k/n (= .5):
    #    11-point AP = #{t in arange(0, 1.1, .1) : t <= k/n} / 11 (= 6/11)
    #    area AP = k / n (= .5)
    n = npos["car"]
    cars = gt_detections(voc_like, with_difficult=False)["car"]
    assert len(cars) == n
    kept = cars[::2]
    k = len(kept)
    assert k == math.ceil(n / 2)
    perturbed = dict(gt_detections(voc_like), car=kept)
    n_t = sum(1 for t in np.arange(0.0, 1.1, 0.1) if k / n >= t)
    r07 = evaluate_voc(perturbed, voc_like, VOC_CLASSES, use_07_metric=True)
    r10 = evaluate_voc(perturbed, voc_like, VOC_CLASSES, use_07_metric=False)
    assert r07.ap["car"] == pytest.approx(n_t / 11, abs=1e-12)
    assert r10.ap["car"] == pytest.approx(k / n, abs=1e-12)
    assert n == 8, "tests/assets changed? the numbers in the comments assume 8"
    assert r07.ap["car"] == pytest.approx(6 / 11) and r10.ap["car"] == pytest.approx(0.5)
    # other classes untouched; mAP = mean over classes with gt
    with_gt = [c for c in VOC_CLASSES if npos[c] > 0]
    assert r07.mAP == pytest.approx((len(with_gt) - 1 + r07.ap["car"]) / len(with_gt), abs=1e-12)

    # 2) plus one FP with the highest score (a car box in an image without cars):
    #    ranked first -> precision after TP i is i / (i + 1), increasing, so
    #    the envelope is k / (k + 1) (= 4/5) everywhere up to recall k/n:
    #    11-point AP = n_t * k/(k+1) / 11   (= 6/11 * 4/5 = 24/55)
    #    area AP     = k/n * k/(k+1)        (= .5 * 4/5 = .4)
    no_car = next(img for img in sorted(voc_like) if "car" not in voc_like[img]["labels"])
    fp = (no_car, 2.0, 1.0, 1.0, 50.0, 50.0)
    with_fp = dict(perturbed, car=[fp] + kept)
    r07 = evaluate_voc(with_fp, voc_like, VOC_CLASSES, use_07_metric=True)
    r10 = evaluate_voc(with_fp, voc_like, VOC_CLASSES, use_07_metric=False)
    assert r07.ap["car"] == pytest.approx(n_t * k / (k + 1) / 11, abs=1e-12)
    assert r10.ap["car"] == pytest.approx(k / n * k / (k + 1), abs=1e-12)
    assert r07.ap["car"] == pytest.approx(24 / 55) and r10.ap["car"] == pytest.approx(0.4)


def test_voc_detections_on_difficult_boxes_on_coco_tiny(voc_like):
    kept = gt_detections(voc_like, with_difficult=False)["car"][::2]
    perturbed = dict(gt_detections(voc_like), car=kept)
    # 3) a detection on a difficult car, ranked first: neither TP nor FP, so car's AP stays 6/11 (.5).
    #    Counted as an FP it would give 24/55 (.4) as in 2); as a TP of a 9th positive, area AP 5/9 (.556).
    img, box = _difficult(voc_like, "car")
    on_difficult = dict(perturbed, car=[(img, 3.0, *box)] + kept)
    for use07, want in ((True, 6 / 11), (False, 0.5)):
        r = evaluate_voc(on_difficult, voc_like, VOC_CLASSES, use_07_metric=use07)
        assert r.ap["car"] == pytest.approx(want, abs=1e-12) and r.npos["car"] == 8
    # the same for a difficult person: person stays at AP 1 with the extra top-ranked detection
    img, box = _difficult(voc_like, "person")
    people = dict(gt_detections(voc_like, with_difficult=False), person=[(img, 3.0, *box)] +
                  gt_detections(voc_like, with_difficult=False)["person"])
    assert evaluate_voc(people, voc_like, VOC_CLASSES).ap["person"] == pytest.approx(1.0)
    # control: the same detection 200 px off the box is an FP ranked first, and person's AP drops
    off = (img, 3.0, box[0] + 200, box[1] + 200, box[2] + 200, box[3] + 200)
    people["person"][0] = off
    assert evaluate_voc(people, voc_like, VOC_CLASSES).ap["person"] < 0.99
