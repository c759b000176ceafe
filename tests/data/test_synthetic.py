"""Tests for the synthetic shapes dataset (data/synthetic.py)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from data import synthetic
from data.synthetic import SHAPE_CLASSES, generate_synthetic_coco, render_sample

SMALL = dict(num_train=10, num_val=5, image_size=(96, 128), workers=0)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _iou_matrix(b: np.ndarray) -> np.ndarray:
    x0 = np.maximum(b[:, None, 0], b[None, :, 0])
    y0 = np.maximum(b[:, None, 1], b[None, :, 1])
    x1 = np.minimum(b[:, None, 2], b[None, :, 2])
    y1 = np.minimum(b[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area[:, None] + area[None, :] - inter)


# ---------------------------------------------------------------- render_sample
def test_render_sample_deterministic():
    a = render_sample(np.random.default_rng(7))
    b = render_sample(np.random.default_rng(7))
    c = render_sample(np.random.default_rng(8))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    img, boxes, labels = a
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8
    assert boxes.dtype == np.float32 and boxes.shape == (len(labels), 4)
    assert labels.dtype == np.int64


def test_boxes_tight_on_flat_background():
    seen = set()
    for seed in range(60):
        rng = np.random.default_rng(seed)
        img, boxes, labels = render_sample(rng, image_size=(128, 128), num_objects=(1, 1),
                                           backgrounds=("flat",), clutter_prob=0.0, noise_prob=0.0)
        assert len(boxes) == 1
        # background colour = the most frequent colour
        flat = img.reshape(-1, 3)
        colors, counts = np.unique(flat, axis=0, return_counts=True)
        bg = colors[np.argmax(counts)]
        diff = np.abs(img.astype(np.int16) - bg.astype(np.int16)).max(2) > 0
        ys, xs = np.nonzero(diff)
        pix = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
        # the changed pixels cover the geometric box and exceed it by < 1 px of
        # anti-aliased edge (pixel quantisation), with a little slack
        slack = np.concatenate([boxes[0][:2] - pix[:2], pix[2:] - boxes[0][2:]])
        assert slack.min() >= -0.1 and slack.max() <= 1.25, (seed, SHAPE_CLASSES[labels[0]], boxes[0], pix)
        seen.add(int(labels[0]))
    assert seen == set(range(len(SHAPE_CLASSES)))


def test_box_statistics_over_many_images():
    h, w = 256, 256
    sizes, classes, n_overlap, n_obj = [], set(), 0, 0
    for seed in range(50):
        img, boxes, labels = render_sample(np.random.default_rng(1000 + seed), image_size=(h, w))
        assert len(boxes) >= 1
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert ((labels >= 0) & (labels < len(SHAPE_CLASSES))).all()
        classes.update(labels.tolist())
        sizes.extend(np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).tolist())
        n_obj += len(boxes)
        if len(boxes) > 1:
            iou = _iou_matrix(boxes.astype(np.float64))
            np.fill_diagonal(iou, 0)
            n_overlap += int((iou > 0).any())
    assert len(classes) == len(SHAPE_CLASSES)
    sizes = np.array(sizes)
    assert sizes.min() < 24 and sizes.max() > 120, (sizes.min(), sizes.max())
    assert n_overlap >= 5, n_overlap
    assert n_obj >= 100


def test_truncation_and_small_images():
    # tiny canvases still give valid boxes
    for seed in range(20):
        img, boxes, labels = render_sample(np.random.default_rng(seed), image_size=(48, 64),
                                           num_objects=(1, 3), min_box=8, max_box=30)
        assert img.shape == (48, 64, 3)
        if len(boxes):
            assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 64).all() and (boxes[:, 3] <= 48).all()


# ---------------------------------------------------------------- COCO folder
def test_generate_deterministic_and_val_independent(tmp_path):
    a = generate_synthetic_coco(tmp_path / "a", seed=3, **SMALL)
    b = generate_synthetic_coco(tmp_path / "b", seed=3, **SMALL)
    c = generate_synthetic_coco(tmp_path / "c", seed=4, **SMALL)
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert fa == fb  # byte-identical json, manifest and images
    assert fa["annotations/instances_train.json"] != fc["annotations/instances_train.json"]
    assert fa["annotations/instances_val.json"] != fc["annotations/instances_val.json"]
    # held-out split does not depend on num_train; train images form a prefix
    d = generate_synthetic_coco(tmp_path / "d", seed=3, **{**SMALL, "num_train": 4})
    fd = _files(d)
    val = {k: v for k, v in fa.items() if k.startswith("val/") or k.endswith("instances_val.json")}
    assert val == {k: v for k, v in fd.items() if k in val}
    assert fd["train/000003.jpg"] == fa["train/000003.jpg"]


def test_generate_with_process_pool_matches_in_process(tmp_path):
    a = generate_synthetic_coco(tmp_path / "a", seed=1, num_train=140, num_val=4, image_size=(64, 64), workers=0)
    b = generate_synthetic_coco(tmp_path / "b", seed=1, num_train=140, num_val=4, image_size=(64, 64), workers=2)
    assert _files(a) == _files(b)


def test_coco_format_and_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    root = generate_synthetic_coco(tmp_path / "ds", seed=0, **SMALL)
    for split, n in (("train", SMALL["num_train"]), ("val", SMALL["num_val"])):
        path = root / "annotations" / f"instances_{split}.json"
        raw = json.loads(path.read_text())
        coco = COCO(str(path))
        assert len(coco.getImgIds()) == n == len(list((root / split).iterdir()))
        assert len(coco.getAnnIds()) == len(raw["annotations"]) > 0
        assert sum(len(coco.getAnnIds(imgIds=[i])) for i in coco.getImgIds()) == len(raw["annotations"])
        cats = coco.loadCats(coco.getCatIds())
        assert [c["id"] for c in cats] == list(range(1, len(SHAPE_CLASSES) + 1))
        assert [c["name"] for c in cats] == list(SHAPE_CLASSES)
        ids = [a["id"] for a in raw["annotations"]]
        assert len(set(ids)) == len(ids)
        for a in raw["annotations"]:
            x, y, bw, bh = a["bbox"]
            assert a["iscrowd"] == 0 and bw > 0 and bh > 0
            assert a["area"] == pytest.approx(bw * bh, abs=0.02)
            assert 0 <= x and x + bw <= 128 + 1e-6 and 0 <= y and y + bh <= 96 + 1e-6
        for im in coco.loadImgs(coco.getImgIds()):
            arr = cv2.imread(str(root / split / im["file_name"]))
            assert arr is not None and arr.shape == (im["height"], im["width"], 3) == (96, 128, 3)


def test_manifest_cache(tmp_path):
    out = tmp_path / "ds"
    root = generate_synthetic_coco(out, seed=0, **SMALL)
    assert root == out
    man = json.loads((out / "manifest.json").read_text())
    assert man["complete"] and man["params"]["format_version"] == synthetic.FORMAT_VERSION
    watched = [out / "manifest.json", out / "annotations" / "instances_train.json", out / "train" / "000000.jpg"]
    before = [p.stat().st_mtime_ns for p in watched]
    generate_synthetic_coco(out, seed=0, **SMALL)
    assert [p.stat().st_mtime_ns for p in watched] == before
    # changed parameters -> regenerated in place
    generate_synthetic_coco(out, seed=0, **{**SMALL, "num_val": 3})
    man2 = json.loads((out / "manifest.json").read_text())
    assert man2["params"]["num_val"] == 3
    assert len(list((out / "val").iterdir())) == 3
    # an incomplete folder (e.g. missing images) is regenerated
    (out / "val" / "000000.jpg").unlink()
    generate_synthetic_coco(out, seed=0, **{**SMALL, "num_val": 3})
    assert (out / "val" / "000000.jpg").is_file()
    # no temp folders left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_refuses_to_overwrite_foreign_folder(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("x")
    with pytest.raises(FileExistsError):
        generate_synthetic_coco(out, **SMALL)
    assert (out / "precious.txt").read_text() == "x"


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = synthetic.main(["--out", str(out), "--num-train", "3", "--num-val", "2", "--size", "64", "80",
                         "--seed", "5", "--workers", "0"])
    assert rc == 0
    assert str(out.resolve()) in capsys.readouterr().out
    man = json.loads((out / "manifest.json").read_text())["params"]
    assert man["image_size"] == [64, 80] and man["seed"] == 5 and man["num_train"] == 3


def test_module_does_not_import_models_or_utils():
    tree = ast.parse(Path(synthetic.__file__).read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module or "")
    assert not [n for n in names if n.split(".")[0] in ("models", "utils")]


# ---------------------------------------------------------------- COCO's statistics (data.synthetic.stats: coco)
def test_drawn_scenes_follow_the_table_and_fit_the_image():
    rng = np.random.default_rng(0)
    stats = synthetic.COCO_STATS
    fits = []
    for _ in range(300):
        (h, w), boxes = synthetic.draw_scene(rng, stats)
        assert max(h, w) == stats.long_side and any(abs(w / h - a) < 0.01 for a in stats.image_aspects)
        assert stats.objects.edges[0] <= len(boxes) < stats.objects.edges[-1]
        wh = np.array(boxes)
        assert (wh >= stats.min_side).all()
        assert (np.diff(wh.prod(axis=1)) <= 0).all()  # largest first
        fits += ((wh[:, 0] <= w) & (wh[:, 1] <= h)).tolist()
    assert np.mean(fits) > 0.999  # a large box redraws its shape until it fits (the rest are scaled when drawn)


def _sampling_tv(p, n: int, quantile: float = 0.99) -> float:
    """The total variation distance between ``p`` and the histogram of ``n`` draws from it, at this quantile of
    2000 trials: what sampling alone gives a sample of this size (no generator is that exact)."""
    p = np.asarray(p, dtype=np.float64) / np.sum(p)
    counts = np.random.default_rng(0).multinomial(n, p, size=2000)
    return float(np.quantile(0.5 * np.abs(counts / n - p).sum(axis=1), quantile))


def test_generated_split_matches_the_coco_table(tmp_path):
    """The realised statistics (after placement, occlusion checks and drops) of a 120-image split against COCO_STATS.

    Threshold of each histogram: the 99th percentile of the distance that sampling alone gives at the split's size
    (e.g. ~0.15 for the 7 image shapes of 120 images) plus 0.05, twice the generator's own largest deviation
    measured on a 3000-image split (box_aspect 0.025, every other histogram <= 0.018:
    ``python -m tools.coco_stats data/synthetic_cache_coco/annotations/instances_train.json``). A generator that
    ignored the table (the shapes' 1-6 objects in square images) is at 0.5-1 on the image shapes and object counts.
    """
    from tools.coco_stats import distances, load_scenes, measure

    root = generate_synthetic_coco(tmp_path / "coco", num_train=120, num_val=1, seed=3, stats="coco", workers=0)
    scenes = load_scenes([root / "annotations" / "instances_train.json"])
    got, table = measure(scenes), synthetic.COCO_STATS
    counts = np.array([len(s.boxes) for s in scenes])
    group = np.searchsorted(table.size_groups, counts, side="right") - 1
    boxes = {"image_aspect": (table.image_aspect_p, len(scenes)), "objects": (table.objects.p, len(scenes)),
             "box_aspect": (table.box_aspect.p, int(counts.sum()))}
    for g, hist in enumerate(table.sizes):
        boxes[f"size[{table.size_groups[g]}-{table.size_groups[g + 1] - 1} objects]"] = (hist.p, int(counts[group == g].sum()))
    for name, tv in distances(got, table).items():
        p, n = boxes[name]
        assert tv <= _sampling_tv(p, n) + 0.05, (name, tv, n)
    ann = json.loads((root / "annotations" / "instances_train.json").read_text())["annotations"]
    fill = np.array([a["area"] / (a["bbox"][2] * a["bbox"][3]) for a in ann])
    name = np.array([SHAPE_CLASSES[a["category_id"] - 1].replace("outlined_", "") for a in ann])
    # the area is the silhouette's (COCO: the mask's), never the box's: an axis-aligned rectangle fills its box, a
    # triangle at most half of it, an ellipse at most pi / 4 (axis-aligned; less when rotated); 2-decimal rounding
    assert (np.abs(fill[name == "rectangle"] - 1) < 2e-3).all()
    assert (fill[name == "triangle"] <= 0.5 + 1e-3).all() and (fill[name == "ellipse"] <= np.pi / 4 + 1e-3).all()
    assert (fill > 0).all()


def test_coco_stats_variant_is_deterministic_and_cached_apart(tmp_path):
    kw = dict(num_train=4, num_val=2, stats="coco", workers=0)
    a, b = generate_synthetic_coco(tmp_path / "a", seed=1, **kw), generate_synthetic_coco(tmp_path / "b", seed=1, **kw)
    c = generate_synthetic_coco(tmp_path / "c", seed=2, **kw)
    assert _files(a) == _files(b) and _files(a) != _files(c)
    assert json.loads((a / "manifest.json").read_text())["params"]["stats"] == "coco"
    # the shapes' own ranges are unused: other values of them find the cache up to date
    before = (a / "manifest.json").stat().st_mtime_ns
    generate_synthetic_coco(a, seed=1, image_size=(64, 64), num_objects=(1, 4), min_box=24, max_box=160, **kw)
    assert (a / "manifest.json").stat().st_mtime_ns == before
    plain = generate_synthetic_coco(tmp_path / "plain", seed=1, num_train=4, num_val=2, workers=0)
    assert "stats" not in json.loads((plain / "manifest.json").read_text())["params"]  # the shapes' caches stay valid
    with pytest.raises(ValueError, match="size_range"):
        generate_synthetic_coco(tmp_path / "d", size_range=(100, 200), **kw)


def test_coco_stats_tool_measures_by_hand(tmp_path):
    from tools.coco_stats import load_scenes, measure, size_split

    # a 640x480 image (sqrt of its area 554.3) with two boxes: sqrt(box area) 30 px (30 / 554.3 = 0.054, octave bin
    # [1/32, 1/16)) of h / w 3, and 100 px (0.180, bin [1/8, 1/4)) of h / w 0.7; a crowd region, which does not count;
    # a 480x640 image without boxes; the file given twice counts once
    def box(side, aspect):
        return [0, 0, side / aspect ** 0.5, side * aspect ** 0.5]

    gt = {"images": [{"id": 1, "file_name": "a.jpg", "height": 480, "width": 640},
                     {"id": 2, "file_name": "b.jpg", "height": 640, "width": 480}],
          "annotations": [{"id": 1, "image_id": 1, "bbox": box(30, 3), "area": 500.0, "iscrowd": 0},
                          {"id": 2, "image_id": 1, "bbox": box(100, 0.7), "area": 9000.0, "iscrowd": 0},
                          {"id": 3, "image_id": 1, "bbox": [0, 0, 300, 300], "area": 90000.0, "iscrowd": 1}],
          "categories": [{"id": 1, "name": "x"}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    scenes = load_scenes([path, path])
    assert len(scenes) == 2 and [len(s.boxes) for s in scenes] == [2, 0]
    stats = measure(scenes)
    assert stats.image_aspect_p == (0.0, 0.0, 0.5, 0.0, 0.5, 0.0, 0.0)  # 3:4 and 4:3
    assert stats.objects.p == (0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0)  # the image with boxes holds 2
    assert stats.sizes[0].p == (0.0, 0.0, 0.5, 0.0, 0.5, 0.0, 0.0) and stats.sizes[1].p == (0.0,) * 7
    assert stats.box_aspect.p == (0.0, 0.0, 0.0, 0.5, 0.0, 0.5, 0.0)  # [1/2, 1) and [2, 4)
    # COCO's limits 32^2 and 96^2: the area field 500 small, 9000 medium; the box areas 900 small, 10000 large
    assert size_split(scenes) == {"area": (0.5, 0.5, 0.0), "box": (0.5, 0.0, 0.5)}
