"""The command-line scripts end to end: eval.py (model and detections file), test.py, train.py --vis_targets."""
from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from config import config_to_dict, load_config
from models import build_model
from tests.conftest import COCO_JSON, COCO_SPLIT, REPO
from utils.checkpoint import save_checkpoint

SMALL = {"model.backbone.width_mult": 0.25, "model.encoder.channels": 32, "model.encoder.mid_channels": 8,
         "model.test.score_thresh": 0.0, "data.num_workers": 0}


def _run(*args, check=True):
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def coco_checkpoint(tmp_path_factory):
    """A random-weight 80-class model checkpoint in this project's format (what train.py writes)."""
    cfg = load_config(REPO / "config/small_cpu.yaml", {**SMALL, "model.num_classes": 80, "data.dataset": "coco"})
    torch.manual_seed(0)
    model = build_model(cfg)
    path = tmp_path_factory.mktemp("ckpt") / "model.pth"
    save_checkpoint(path, {"model": model.state_dict(), "config": config_to_dict(cfg),
                           "class_names": [f"class{i}" for i in range(80)]})
    return path


def test_eval_scores_a_detections_file_without_a_model(coco_tiny, tmp_path):
    gt = json.loads((coco_tiny / "annotations/instances_val2017.json").read_text())
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt["annotations"] if not a.get("iscrowd", 0)]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    out = tmp_path / "metrics.json"
    _run("eval.py", "-d", "coco", "--root", str(coco_tiny), "--split", "val2017", "--results",
         str(tmp_path / "dets.json"), "--out", str(out))
    metrics = json.loads(out.read_text())
    stats = metrics.get("stats", metrics)
    assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0)
    assert (tmp_path / "metrics_pr_curve.png").is_file()


def test_eval_results_on_synthetic_data_score_the_synthetic_val_split(coco_tiny, tmp_path):
    """The synthetic data's held-out split is ``val`` (data.build.DATASETS), from -d synthetic or from the config's
    data.val_split; a decoy ``val2017`` file whose boxes are moved by their own size (IoU 0) gives AP 0."""
    gt = json.loads((coco_tiny / "annotations/instances_val2017.json").read_text())
    root = tmp_path / "synthetic"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations/instances_val.json").write_text(json.dumps(gt))
    decoy = json.loads(json.dumps(gt))
    for a in decoy["annotations"]:
        x, y, w, h = a["bbox"]
        a["bbox"] = [x + w, y + h, w, h]
    (root / "annotations/instances_val2017.json").write_text(json.dumps(decoy))
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt["annotations"] if not a.get("iscrowd", 0)]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    for how in (["-d", "synthetic"], ["--config", "config/small_cpu.yaml"]):
        out = tmp_path / f"metrics_{how[0].strip('-')}.json"
        _run("eval.py", *how, "--root", str(root), "--results", str(tmp_path / "dets.json"), "--out", str(out))
        stats = json.loads(out.read_text())["stats"]
        assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0), how
    proc = _run("eval.py", "-d", "synthetic", "--root", str(root), "--split", "val2017", "--results",
                str(tmp_path / "dets.json"), "--out", str(tmp_path / "decoy.json"))
    assert json.loads((tmp_path / "decoy.json").read_text())["stats"]["AP"] == 0.0, proc.stdout


def _expected_detections(checkpoint, coco_tiny, min_size, max_size):
    """What eval.py must write, computed here image by image: the model on each resized image, its boxes
    scaled back to the original size by hand, xyxy -> xywh, labels -> the annotation file's category ids."""
    from data.coco import COCODetection
    from data.transforms import build_transforms
    from models.fuse import prepare_for_inference
    from utils.checkpoint import load_model_weights

    cfg = load_config(REPO / "config/small_cpu.yaml", {**SMALL, "model.num_classes": 80, "data.dataset": "coco"})
    model = build_model(cfg)
    load_model_weights(model, checkpoint)
    model = prepare_for_inference(model)
    ds = COCODetection(coco_tiny / COCO_SPLIT, COCO_JSON, build_transforms(False, min_size, max_size),
                       cfg.model.input_format)
    cat_ids = sorted(c["id"] for c in json.loads(COCO_JSON.read_text())["categories"])
    expected = {}
    for i in range(len(ds)):
        image, t = ds[i]
        (h, w), (oh, ow) = t["size"].tolist(), t["orig_size"].tolist()
        assert (h, w) != (oh, ow) and (min(h, w) == min_size or max(h, w) == max_size)  # really resized
        with torch.no_grad():
            o = model([image])[0]  # in the resized image's pixels
        b = o["boxes"].double() * torch.tensor([ow / w, oh / h, ow / w, oh / h], dtype=torch.float64)
        expected[t["image_id"]] = [(cat_ids[l], [x1, y1, x2 - x1, y2 - y1], s) for (x1, y1, x2, y2), s, l in
                                   zip(b.tolist(), o["scores"].tolist(), o["labels"].tolist())]
    return expected


def test_eval_runs_a_checkpoint_on_coco_tiny(coco_tiny, coco_checkpoint, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out = tmp_path / "m.json"
    proc = _run("eval.py", "--weight", str(coco_checkpoint), "-d", "coco", "--root", str(coco_tiny), "--split",
                COCO_SPLIT, "--out", str(out), "--save_results", str(tmp_path / "dets.json"), "--num_workers", "0",
                "--batch_size", "1", "--opts", "data.test_min_size=128", "data.test_max_size=192")
    dets = json.loads((tmp_path / "dets.json").read_text())
    expected = _expected_detections(coco_checkpoint, coco_tiny, 128, 192)
    assert {d["image_id"] for d in dets} == set(expected) and len(expected) == 7
    for image_id, want in expected.items():
        got = [d for d in dets if d["image_id"] == image_id]
        assert len(got) == len(want) > 0, image_id
        for d, (cat, bbox, score) in zip(got, want):
            assert d["category_id"] == cat  # original (non-contiguous) ids
            assert d["bbox"] == pytest.approx(bbox, abs=0.006) and d["score"] == pytest.approx(score, abs=6e-6)
    # the metrics are pycocotools' on the written detections
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(COCO_JSON))
        E = COCOeval(gt, gt.loadRes(str(tmp_path / "dets.json")), "bbox")
        E.evaluate(), E.accumulate(), E.summarize()
    stats = json.loads(out.read_text())
    stats = stats.get("stats", stats)
    for name, want in zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), E.stats):
        assert stats[name] == pytest.approx(float(want), abs=1e-12), name
    assert "AP" in proc.stdout


def test_predict_and_coco_results_glue_by_hand(coco_tiny):
    """predict() asks the model for boxes in each image's original size; to_coco_results writes xywh and
    category ids. A hand-made model answers with a box at fixed fractions of the size it is asked for."""
    from data.build import build_test_loader
    from data.coco import COCODetection
    from data.transforms import build_transforms
    from evaluation.evaluator import predict, score_coco, to_coco_results

    class FractionModel(torch.nn.Module):
        def forward(self, images, output_sizes=None):
            assert all(min(im.shape[1:]) == 96 or max(im.shape[1:]) == 128 for im in images)  # the resized inputs
            return [{"boxes": torch.tensor([[0.25 * w, 0.5 * h, 0.75 * w, 1.0 * h]]), "scores": torch.tensor([0.5]),
                     "labels": torch.tensor([2])} for h, w in output_sizes]

    ds = COCODetection(coco_tiny / COCO_SPLIT, COCO_JSON, build_transforms(False, 96, 128))
    preds = predict(FractionModel(), build_test_loader(ds, 3, 0), torch.device("cpu"), progress=False)
    sizes = {im["id"]: (im["height"], im["width"]) for im in json.loads(COCO_JSON.read_text())["images"]}
    assert [p["image_id"] for p in preds] == ds.ids  # in dataset order, across batches of 3
    for p in preds:
        h, w = sizes[p["image_id"]]
        np.testing.assert_allclose(p["boxes"], [[0.25 * w, 0.5 * h, 0.75 * w, h]], rtol=1e-6)
    # the 640 x 480 image 5001: x 160..480, y 240..480 -> [160, 240, 320, 240]; label 2 -> category 3 (car)
    res = to_coco_results(preds, ds.label_to_cat_id)
    assert res[0] == {"image_id": 5001, "category_id": 3, "bbox": [160.0, 240.0, 320.0, 240.0], "score": 0.5}
    assert [r["image_id"] for r in res] == ds.ids and {r["category_id"] for r in res} == {3}
    # numpy ids and labels become plain ints (JSON); boxes xyxy -> xywh (to the 0.01 px the file may round to)
    odd = [{"image_id": np.int64(7), "boxes": np.array([[1.004, 2.0, 11.5, 2.5]]), "scores": np.array([0.1234567]),
            "labels": np.array([1])}]
    (r,) = to_coco_results(odd, [1, 90])
    assert type(r["image_id"]) is int and type(r["category_id"]) is int and (r["image_id"], r["category_id"]) == (7, 90)
    assert (r["bbox"] == pytest.approx([1.004, 2.0, 10.496, 0.5], abs=0.006)
            and r["score"] == pytest.approx(0.1234567, abs=6e-6))
    json.dumps(res + [r])  # writable as is
    # score_coco on predictions equal to the ground truth (labels through label_to_cat_id) gives AP 1
    perfect = []
    for i in range(len(ds)):
        a = ds.get_annotation(i)
        perfect.append({"image_id": ds.ids[i], "boxes": a["boxes"], "scores": np.ones(len(a["boxes"])),
                        "labels": a["labels"]})
    metrics, _ = score_coco(ds, perfect)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)


def test_eval_bad_inputs_name_the_problem(coco_tiny, coco_checkpoint, tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"definitely not a checkpoint")
    proc = _run("eval.py", "--weight", str(junk), "--config", "config/small_cpu.yaml", "-d", "coco", "--root",
                str(coco_tiny), "--out", str(tmp_path / "x.json"), check=False)
    assert proc.returncode != 0 and "junk.pth" in proc.stderr
    proc = _run("eval.py", "--weight", str(coco_checkpoint), "--config", "config/small_cpu.yaml", "-d", "coco",
                "--root", str(coco_tiny), "--split", "val2017", "--out", str(tmp_path / "x.json"), "--opts",
                "model.backbone.width_mult=0.25", "model.encoder.channels=32", "model.encoder.mid_channels=8",
                check=False)
    # an 80-class checkpoint against the 5-class quickstart config: the mismatching tensors are named, no traceback
    assert proc.returncode != 0 and "does not fit the configured model" in proc.stderr
    assert "decoder.cls_score" in proc.stderr and "Traceback" not in proc.stderr
    proc = _run("eval.py", "-d", "coco", "--root", str(tmp_path), "--split", "val2017", "--results",
                str(tmp_path / "none.json"), "--out", str(tmp_path / "x.json"), check=False)
    assert proc.returncode != 0 and "instances_val2017.json" in (proc.stderr + proc.stdout)


def test_test_py_draws_boxes_on_real_images(coco_tiny, coco_checkpoint, tmp_path):
    src = sorted((coco_tiny / "val2017").glob("*.jpg"))[:2]
    folder = tmp_path / "in"
    folder.mkdir()
    for p in src:
        (folder / p.name).write_bytes(p.read_bytes())
    proc = _run("test.py", "--weight", str(coco_checkpoint), "--input", str(folder),
                "--save_dir", str(tmp_path / "out"), "--score_thresh", "0.0", "--show")
    assert "no display" in proc.stdout and "FPS" in proc.stdout
    for p in src:
        drawn = cv2.imread(str(tmp_path / "out" / (p.stem + ".jpg")))
        orig = cv2.imread(str(p))
        assert drawn.shape == orig.shape
        diff = np.abs(drawn.astype(int) - orig.astype(int)).max(axis=2) > 60  # beyond JPEG noise: drawn pixels
        assert diff.sum() > 100


def test_vis_targets_writes_pictures(tmp_path):
    out = tmp_path / "vis"
    _run("train.py", "--config", "config/small_cpu.yaml", "--vis_targets", "--vis_num", "2", "--output_dir", str(out),
         "--opts", f"data.root={tmp_path / 'synth'}", "data.synthetic.num_train=8", "data.synthetic.num_val=2",
         "data.synthetic.image_size=[96,96]", "model.backbone.width_mult=0.25")
    pics = sorted((out / "vis_targets").glob("*.png"))
    assert len(pics) == 2 and cv2.imread(str(pics[0])) is not None


def _voc_devkit(root, coco_tiny):
    """A 2-image VOC2007 'test' split from coco_tiny pictures with hand-written boxes (one difficult)."""
    d = root / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    objects = {"000001": [("dog", (11, 21, 100, 120), 0), ("person", (50, 30, 90, 110), 1)],
               "000002": [("car", (5, 5, 60, 40), 0), ("car", (70, 10, 150, 90), 0)]}
    for src, (iid, objs) in zip(sorted((coco_tiny / "val2017").glob("*.jpg")), objects.items()):
        img = cv2.imread(str(src))
        h, w = img.shape[:2]
        cv2.imwrite(str(d / "JPEGImages" / f"{iid}.jpg"), img)
        xml = "".join(f"<object><name>{n}</name><difficult>{df}</difficult><bndbox><xmin>{b[0]}</xmin>"
                      f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
                      for n, b, df in objs)
        (d / "Annotations" / f"{iid}.xml").write_text(
            f"<annotation><filename>{iid}.jpg</filename><size><width>{w}</width><height>{h}</height><depth>3</depth>"
            f"</size>{xml}</annotation>")
    (d / "ImageSets/Main/test.txt").write_text("000001\n000002\n")
    return objects


def test_voc_evaluation_glue_round_trips_devkit_coordinates(coco_tiny, tmp_path):
    from data.voc import VOCDetection
    from evaluation.evaluator import score_voc

    objects = _voc_devkit(tmp_path / "VOCdevkit", coco_tiny)
    ds = VOCDetection(tmp_path / "VOCdevkit", (("2007", "test"),), keep_difficult=True)
    # "model output" = the dataset's own 0-based boxes; the evaluator must turn them back into the xml's 1-based ones
    preds = []
    for i in range(len(ds)):
        a = ds.get_annotation(i)
        keep = ~a["difficult"].astype(bool)
        preds.append({"image_id": ds._image_id(i), "boxes": a["boxes"][keep], "scores": np.ones(int(keep.sum())),
                      "labels": a["labels"][keep]})
    metrics, result = score_voc(ds, preds, metrics_path=tmp_path / "m.json", split="test",
                                results_dir=tmp_path / "comp4")
    assert metrics["mAP"] == pytest.approx(1.0) and metrics["AP_car"] == pytest.approx(1.0)
    lines = (tmp_path / "comp4" / "comp4_det_test_dog.txt").read_text().split()
    assert lines[0] == "000001" and [float(v) for v in lines[2:6]] == [11, 21, 100, 120]
    # the same files through eval.py --results, without a model; a dropped car halves car's recall
    car = tmp_path / "comp4" / "comp4_det_test_car.txt"
    car.write_text(car.read_text().splitlines()[0] + "\n")
    out = tmp_path / "files.json"
    _run("eval.py", "-d", "voc", "--root", str(tmp_path / "VOCdevkit"), "--year", "2007", "--split", "test",
         "--results", str(tmp_path / "comp4"), "--out", str(out), "--voc_metric", "area")
    m = json.loads(out.read_text())
    ap = m.get("ap", m)
    car_ap = ap.get("car", ap.get("AP_car"))
    assert car_ap == pytest.approx(0.5)  # area metric: precision 1 up to recall 0.5
