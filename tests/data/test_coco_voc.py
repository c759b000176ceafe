"""Tests for data/coco.py, data/voc.py and data/collate.py.

The real-image tests use the COCO images shipped in tests/assets (conftest ``coco_tiny``) and check the
dataset against the annotation json read independently here; bad-input tests build small broken datasets
in tmp_path.
"""
from __future__ import annotations

import gc
import json
import logging
import pickle
import types
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data.build import SeededDataset
from data.collate import collate, collate_padded
from data.coco import COCODetection
from data.transforms import build_transforms
from config import load_config
from data.voc import VOC_CLASSES, VOCDetection
from tests.conftest import COCO_JSON, COCO_SPLIT, COCO_TINY, REPO

IMAGES = COCO_TINY / COCO_SPLIT
TRAIN_JSON = COCO_JSON  # the one split of tests/assets serves as training data here


@pytest.fixture(scope="module")
def train_json(coco_tiny):
    with open(TRAIN_JSON) as f:
        return json.load(f)


def _expected_per_image(js):
    """Independent reading of the json: non-crowd positive-size boxes (xyxy clipped) and crowd counts."""
    imgs = {im["id"]: im for im in js["images"]}
    boxes, cats, crowd = {i: [] for i in imgs}, {i: [] for i in imgs}, Counter()
    for a in js["annotations"]:
        x, y, w, h = a["bbox"]
        if a.get("iscrowd", 0):
            crowd[a["image_id"]] += 1
            continue
        if w <= 0 or h <= 0:
            continue
        im = imgs[a["image_id"]]
        boxes[a["image_id"]].append([min(max(x, 0), im["width"]), min(max(y, 0), im["height"]),
                                     min(x + w, im["width"]), min(y + h, im["height"])])
        cats[a["image_id"]].append(a["category_id"])
    return imgs, boxes, cats, crowd


# ============================================================================ COCO on coco_tiny
def test_coco_tiny_raw_targets_match_json(coco_tiny, train_json):
    ds = COCODetection(IMAGES, TRAIN_JSON, transforms=None, filter_empty=True)
    imgs, exp_boxes, exp_cats, exp_crowd = _expected_per_image(train_json)
    assert len(ds) == len(imgs) == 7  # no image of tests/assets is empty
    assert ds.ids == sorted(imgs)
    # contiguous labels in sorted category-id order, names follow
    cat_ids = sorted(c["id"] for c in train_json["categories"])
    assert cat_ids != list(range(1, len(cat_ids) + 1))  # really non-contiguous
    assert ds.label_to_cat_id == cat_ids
    assert all(ds.cat_id_to_label[c] == i for i, c in enumerate(cat_ids))
    names = {c["id"]: c["name"] for c in train_json["categories"]}
    assert ds.class_names == [names[c] for c in cat_ids]
    assert ds.coco.getImgIds() and len(ds.coco.anns) == len(train_json["annotations"])

    n_boxes = n_crowd = 0
    for i in range(len(ds)):
        image, t = ds[i]
        iid = t["image_id"]
        assert isinstance(iid, int) and iid == ds.ids[i]
        im = imgs[iid]
        assert image.dtype == torch.uint8 and image.shape == (3, im["height"], im["width"])
        assert t["orig_size"].tolist() == [im["height"], im["width"]] == t["size"].tolist()
        assert t["orig_size"].dtype == torch.int64 and t["size"].dtype == torch.int64
        assert t["file_name"] == str(IMAGES / im["file_name"])
        assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64
        # label mapping round-trips to the original category ids, in json order
        assert [ds.label_to_cat_id[l] for l in t["labels"].tolist()] == exp_cats[iid]
        np.testing.assert_allclose(t["boxes"].numpy(), np.array(exp_boxes[iid]).reshape(-1, 4), atol=1e-3)
        assert t["crowd_boxes"].shape == (exp_crowd[iid], 4) and t["crowd_boxes"].dtype == torch.float32
        n_boxes += len(t["boxes"])
        n_crowd += len(t["crowd_boxes"])
    n_noncrowd_json = sum(1 for a in train_json["annotations"]
                          if not a["iscrowd"] and a["bbox"][2] > 0 and a["bbox"][3] > 0)
    assert n_boxes == n_noncrowd_json
    assert n_crowd == sum(a["iscrowd"] for a in train_json["annotations"]) == 2  # tests/assets/README.md: 2 crowd


def test_coco_tiny_crowd_boxes_are_not_training_boxes(coco_tiny, train_json):
    ds = COCODetection(IMAGES, TRAIN_JSON)
    crowd_anns = [a for a in train_json["annotations"] if a["iscrowd"]]
    for a in crowd_anns:
        i = ds.ids.index(a["image_id"])
        t = ds.get_annotation(i)
        x, y, w, h = a["bbox"]
        box = np.array([x, y, x + w, y + h])
        assert np.isclose(t["crowd_boxes"], box, atol=1e-3).all(axis=1).any()
        assert not np.isclose(t["boxes"], box, atol=1e-3).all(axis=1).any()


def test_coco_tiny_train_pipeline_boxes_inside(coco_tiny):
    ds = COCODetection(IMAGES, TRAIN_JSON, transforms=build_transforms(True))
    ds.set_rng(np.random.default_rng(0))
    n_flipped_or_shifted = 0
    passes = 8  # 8 augmented passes over the 7 images: 56 samples
    for i in [i for _ in range(passes) for i in range(len(ds))]:
        image, t = ds[i]
        h, w = t["size"].tolist()
        assert image.shape == (3, h, w)
        assert min(h, w) == 800 or max(h, w) == 1333
        b = t["boxes"]
        assert len(b) == len(t["labels"])
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert ((b[:, 2] - b[:, 0]) > 0).all() and ((b[:, 3] - b[:, 1]) > 0).all()
        cb = t["crowd_boxes"]
        assert (cb[:, 2] <= w).all() and (cb[:, 3] <= h).all() and (cb >= 0).all()
        raw = ds.get_annotation(i)["boxes"]
        oh, ow = t["orig_size"].tolist()
        sx, sy = w / ow, h / oh
        if len(raw) != len(b) or not np.allclose(b.numpy(), raw * [sx, sy, sx, sy], atol=1e-2):
            n_flipped_or_shifted += 1
    # P(no flip and no shift) = 1/4: ~42 of 56 expected (binomial sd 3.2); a pipeline without them gives 0
    assert n_flipped_or_shifted > 0.6 * passes * len(ds)


def test_coco_tiny_test_pipeline_and_rgb(coco_tiny):
    val_json = COCO_JSON
    bgr = COCODetection(IMAGES, val_json, transforms=build_transforms(False), filter_empty=False)
    rgb = COCODetection(IMAGES, val_json, transforms=build_transforms(False), filter_empty=False,
                        input_format="RGB")
    assert len(bgr) == 7
    a, ta = bgr[3]
    b, tb = rgb[3]
    assert torch.equal(a, b.flip(0))
    assert torch.equal(ta["boxes"], tb["boxes"])
    # BGR: equals OpenCV decode + resize
    raw = cv2.imread(ta["file_name"], cv2.IMREAD_COLOR)
    h, w = ta["size"].tolist()
    assert torch.equal(a, torch.from_numpy(cv2.resize(raw, (w, h), interpolation=cv2.INTER_LINEAR)).permute(2, 0, 1))
    with pytest.raises(ValueError, match="input_format"):
        COCODetection(IMAGES, val_json, input_format="YUV")


def test_coco_filter_empty(coco_tiny, train_json, tmp_path):
    js = json.loads(json.dumps(train_json))
    ids = sorted(im["id"] for im in js["images"])
    crowd_img = next(a["image_id"] for a in js["annotations"] if a["iscrowd"])
    plain_img = next(i for i in ids if i != crowd_img)
    # crowd_img keeps only its crowd annotations; plain_img loses all annotations
    js["annotations"] = [a for a in js["annotations"]
                         if not (a["image_id"] == plain_img or (a["image_id"] == crowd_img and not a["iscrowd"]))]
    ann = tmp_path / "filtered.json"
    ann.write_text(json.dumps(js))
    ds = COCODetection(IMAGES, ann, filter_empty=True)
    assert len(ds) == len(ids) - 2 and crowd_img not in ds.ids and plain_img not in ds.ids
    keep = COCODetection(IMAGES, ann, filter_empty=False)
    assert len(keep) == len(ids) and keep.ids == ids
    _, t = keep[keep.ids.index(crowd_img)]
    assert t["boxes"].shape == (0, 4) and t["labels"].shape == (0,) and len(t["crowd_boxes"]) >= 1
    _, t = keep[keep.ids.index(plain_img)]
    assert t["boxes"].shape == (0, 4) and t["crowd_boxes"].shape == (0, 4)


def test_the_generator_set_on_a_dataset_decides_its_augmentations(coco_tiny):
    """One seeding mechanism, set_rng (training: one generator per sample): the same generator seed gives the same
    augmentations, another seed others, and a new generator restarts the stream."""
    def run(seed):
        ds = COCODetection(IMAGES, TRAIN_JSON, transforms=build_transforms(True))
        ds.set_rng(np.random.default_rng(seed))
        return [ds[0][1]["boxes"] for _ in range(6)]

    first = run(123)
    again = run(123)
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    assert len({tuple(x.flatten().tolist()) for x in first}) > 1  # augmentation varies across calls
    assert not all(torch.equal(x, y) for x, y in zip(first, run(124)))
    ds = COCODetection(IMAGES, TRAIN_JSON, transforms=build_transforms(True))
    ds.set_rng(np.random.default_rng(7))
    a = [ds[0][1]["boxes"] for _ in range(4)]
    ds.set_rng(np.random.default_rng(7))
    assert all(torch.equal(x, y) for x, y in zip(a, [ds[0][1]["boxes"] for _ in range(4)]))


def test_pickle_drops_coco_and_rebuilds(coco_tiny):
    ds = COCODetection(IMAGES, TRAIN_JSON)
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._coco is None
    assert len(clone.coco.anns) == len(ds.coco.anns)
    assert torch.equal(clone[5][1]["boxes"], ds[5][1]["boxes"])


# ============================================================================ bad inputs (tmp_path)
def _write_coco(tmp_path: Path, n_images=3, size=(40, 60), annotations=None, categories=None, name="ann.json"):
    img_dir = tmp_path / "images"
    img_dir.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    images = []
    for k in range(n_images):
        fn = f"img{k}.jpg"
        cv2.imwrite(str(img_dir / fn), rng.integers(0, 255, (size[0], size[1], 3), dtype=np.uint8))
        images.append({"id": 100 + k, "file_name": fn, "height": size[0], "width": size[1]})
    if categories is None:
        categories = [{"id": 3, "name": "car"}, {"id": 7, "name": "train"}]
    if annotations is None:
        annotations = [{"id": 1000 + k, "image_id": 100 + k, "category_id": 3 if k % 2 else 7,
                        "bbox": [5.0, 6.0, 10.0, 12.0], "iscrowd": 0, "area": 120.0} for k in range(n_images)]
    js = {"images": images, "annotations": annotations, "categories": categories}
    ann = tmp_path / name
    ann.write_text(json.dumps(js))
    return img_dir, ann, js


def test_missing_annotation_file(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(ValueError, match="not found") as e:
        COCODetection(tmp_path, missing)
    assert str(missing) in str(e.value)
    assert isinstance(e.value, FileNotFoundError)


def test_malformed_json(tmp_path):
    img_dir, ann, _ = _write_coco(tmp_path)
    ann.write_text(ann.read_text()[:-20])  # truncated
    with pytest.raises(ValueError, match="not valid JSON") as e:
        COCODetection(img_dir, ann)
    assert str(ann) in str(e.value)


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_top_level_key(tmp_path, key):
    img_dir, ann, js = _write_coco(tmp_path)
    del js[key]
    ann.write_text(json.dumps(js))
    with pytest.raises(ValueError) as e:
        COCODetection(img_dir, ann)
    assert str(ann) in str(e.value) and key in str(e.value) and "missing" in str(e.value)


def test_unknown_category_id(tmp_path):
    anns = [{"id": 555, "image_id": 100, "category_id": 42, "bbox": [1, 1, 5, 5], "iscrowd": 0}]
    img_dir, ann, _ = _write_coco(tmp_path, annotations=anns)
    with pytest.raises(ValueError) as e:
        COCODetection(img_dir, ann)
    msg = str(e.value)
    assert str(ann) in msg and "555" in msg and "42" in msg and "unknown category" in msg


def test_zero_size_boxes_dropped_with_one_warning_and_outside_clipped(tmp_path, caplog):
    anns = [
        {"id": 1, "image_id": 100, "category_id": 3, "bbox": [5, 5, 0, 10], "iscrowd": 0},   # zero width
        {"id": 2, "image_id": 100, "category_id": 3, "bbox": [5, 5, 10, -1], "iscrowd": 0},  # negative height
        {"id": 3, "image_id": 100, "category_id": 7, "bbox": [50, -4, 20, 14], "iscrowd": 0},  # sticks out
        {"id": 4, "image_id": 101, "category_id": 3, "bbox": [1, 2, 3, 4], "iscrowd": 0},
        {"id": 5, "image_id": 102, "category_id": 3, "bbox": [0, 0, 0, 0], "iscrowd": 0},    # only a bad box
    ]
    img_dir, ann, _ = _write_coco(tmp_path, annotations=anns)  # images are 40x60 (h x w)
    with caplog.at_level(logging.WARNING, logger="data.coco"):
        ds = COCODetection(img_dir, ann)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert str(ann) in msg and "dropped 3 box(es)" in msg and "[1, 2, 5]" in msg
    assert ds.ids == [100, 101]  # image 102 had only the bad box -> filtered as empty
    _, t = ds[0]
    np.testing.assert_allclose(t["boxes"].numpy(), [[50, 0, 60, 10]])  # clipped to the 60x40 image
    assert [ds.label_to_cat_id[l] for l in t["labels"].tolist()] == [7]
    assert len(COCODetection(img_dir, ann, filter_empty=False)) == 3


def test_corrupt_and_missing_images_are_skipped(tmp_path, caplog):
    img_dir, ann, js = _write_coco(tmp_path, n_images=4)
    (img_dir / "img1.jpg").write_bytes(b"this is not a jpeg")
    (img_dir / "img2.jpg").unlink()
    ds = COCODetection(img_dir, ann)
    with caplog.at_level(logging.WARNING, logger="data.coco"):
        _, t = ds[1]
    assert t["image_id"] == 103  # 101 corrupt, 102 missing -> next readable sample
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(msgs) == 2
    assert str(img_dir / "img1.jpg") in msgs[0] and "corrupt" in msgs[0]
    assert str(img_dir / "img2.jpg") in msgs[1] and "does not exist" in msgs[1]
    assert ds.num_skipped == 2
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="data.coco"):
        assert ds[2][1]["image_id"] == 103  # known bad: skipped without re-reading / re-logging
    assert not caplog.records
    assert ds[3][1]["image_id"] == 103 and ds[0][1]["image_id"] == 100


def test_all_images_unreadable(tmp_path):
    img_dir, ann, _ = _write_coco(tmp_path, n_images=2)
    for p in img_dir.iterdir():
        p.write_bytes(b"\x00" * 10)
    ds = COCODetection(img_dir, ann)
    with pytest.raises(RuntimeError, match="none of the 2 images"):
        ds[0]


def test_too_many_corrupt_images_raise(tmp_path):
    n = 14
    img_dir, ann, _ = _write_coco(tmp_path, n_images=n, size=(8, 8))
    for k in range(12):
        (img_dir / f"img{k}.jpg").write_bytes(b"garbage")
    ds = COCODetection(img_dir, ann, max_skip_fraction=0.01)
    assert ds.skip_limit == 10
    with pytest.raises(RuntimeError) as e:
        for i in range(n):
            ds[i]
    msg = str(e.value)
    assert "11 images could not be read" in msg and "max(10" in msg and "img0.jpg" in msg


def test_grayscale_and_rgba_png(tmp_path, caplog):
    img_dir, ann, js = _write_coco(tmp_path, n_images=2)
    gray = (np.arange(40 * 60) % 251).astype(np.uint8).reshape(40, 60)
    rgba = np.dstack([np.full((40, 60), v, np.uint8) for v in (10, 20, 30, 40)])  # B, G, R, A
    cv2.imwrite(str(img_dir / "gray.png"), gray)
    cv2.imwrite(str(img_dir / "rgba.png"), rgba)
    js["images"][0]["file_name"] = "gray.png"
    js["images"][1]["file_name"] = "rgba.png"
    ann.write_text(json.dumps(js))
    ds = COCODetection(img_dir, ann)
    with caplog.at_level(logging.DEBUG, logger="data.dataset_base"):
        g, _ = ds[0]
        c, _ = ds[1]
    assert g.shape == (3, 40, 60) and c.shape == (3, 40, 60)
    for ch in range(3):
        assert torch.equal(g[ch], torch.from_numpy(gray))
    assert c[:, 0, 0].tolist() == [10, 20, 30]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("gray.png" in m and "1 channel" in m for m in debug)
    assert any("rgba.png" in m and "4 channel" in m for m in debug)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# ============================================================================ VOC
def _xml(fn, w, h, objects):
    objs = "".join(
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>{int(diff)}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b, diff in objects)
    return (f"<annotation><folder>VOC</folder><filename>{fn}</filename><size><width>{w}</width>"
            f"<height>{h}</height><depth>3</depth></size><segmented>0</segmented>{objs}</annotation>")


def _source_images(n):
    """Real jpgs from tests/assets."""
    return [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in sorted(IMAGES.glob("*.jpg"))[:n]]


@pytest.fixture()
def vocdevkit(tmp_path):
    root = tmp_path / "VOCdevkit"
    imgs = _source_images(3)
    layout = {"2007": ["000005", "000007"], "2012": ["2008_000002"]}
    objects = {
        "000005": [("chair", (1, 1, 50, 40), False), ("person", (10, 20, 30, 60), True)],  # second is difficult
        "000007": [("tvmonitor", (5, 6, 25, 16), False)],
        "2008_000002": [("aeroplane", (2, 3, 4, 5), True)],  # only a difficult object
    }
    k = 0
    sizes = {}
    for year, ids in layout.items():
        d = root / f"VOC{year}"
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        for iid in ids:
            img = imgs[k]
            k += 1
            h, w = img.shape[:2]
            sizes[iid] = (h, w)
            cv2.imwrite(str(d / "JPEGImages" / f"{iid}.jpg"), img)
            (d / "Annotations" / f"{iid}.xml").write_text(_xml(f"{iid}.jpg", w, h, objects[iid]))
        (d / "ImageSets/Main/trainval.txt").write_text("\n".join(ids) + "\n")
    return root, sizes


def test_voc_parsing_and_difficult(vocdevkit):
    root, sizes = vocdevkit
    ds = VOCDetection(root, image_sets=(("2007", "trainval"),), keep_difficult=True)
    assert ds.class_names == list(VOC_CLASSES) and len(VOC_CLASSES) == 20
    assert ds.class_names[:3] == ["aeroplane", "bicycle", "bird"] and ds.class_names[-1] == "tvmonitor"
    assert len(ds) == 2 and ds.ids == ["000005", "000007"]
    img, t = ds[0]
    assert t["image_id"] == "000005"
    h, w = sizes["000005"]
    assert img.shape == (3, h, w) and t["orig_size"].tolist() == [h, w]
    # 1-based inclusive -> 0-based continuous: x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax
    np.testing.assert_array_equal(t["boxes"].numpy(), [[0, 0, 50, 40], [9, 19, 30, 60]])
    assert t["labels"].tolist() == [VOC_CLASSES.index("chair"), VOC_CLASSES.index("person")]
    assert t["difficult"].dtype == torch.bool and t["difficult"].tolist() == [False, True]
    assert t["file_name"].endswith("VOC2007/JPEGImages/000005.jpg")

    train = VOCDetection(root, image_sets=(("2007", "trainval"),), keep_difficult=False)
    _, t = train[0]
    np.testing.assert_array_equal(t["boxes"].numpy(), [[0, 0, 50, 40]])
    assert t["difficult"].tolist() == [False] and t["labels"].tolist() == [VOC_CLASSES.index("chair")]
    assert t["crowd_boxes"].shape == (0, 4)


def test_voc_07_plus_12_and_transforms(vocdevkit):
    root, sizes = vocdevkit
    ds = VOCDetection(root, image_sets=(("2007", "trainval"), ("2012", "trainval")), keep_difficult=True,
                      transforms=build_transforms(True), input_format="RGB")
    assert ds.ids == ["000005", "000007", "2008_000002"]
    ds.set_rng(np.random.default_rng(0))
    for i in range(len(ds)):
        img, t = ds[i]
        assert min(t["size"].tolist()) == 800 and img.shape[0] == 3
        assert len(t["difficult"]) == len(t["boxes"]) == len(t["labels"])
    _, t = ds[2]
    assert t["image_id"] == "2008_000002"
    no_diff = VOCDetection(root, image_sets=(("2007", "trainval"), ("2012", "trainval")))
    _, t = no_diff[2]
    assert t["boxes"].shape == (0, 4) and t["difficult"].shape == (0,)
    single = VOCDetection(root, image_sets=("2012", "trainval"))  # a bare pair is accepted
    assert single.ids == ["2008_000002"]


def test_voc_bad_inputs(vocdevkit):
    root, _ = vocdevkit
    xml = root / "VOC2007/Annotations/000007.xml"
    text = xml.read_text()
    xml.write_text(text.replace("tvmonitor", "television"))
    with pytest.raises(ValueError) as e:
        VOCDetection(root)
    assert str(xml) in str(e.value) and "television" in str(e.value)
    xml.write_text(text[:-30])
    with pytest.raises(ValueError, match="not valid XML") as e:
        VOCDetection(root)
    assert str(xml) in str(e.value)
    xml.unlink()
    with pytest.raises(FileNotFoundError) as e:
        VOCDetection(root)
    assert str(xml) in str(e.value)
    with pytest.raises(FileNotFoundError) as e:
        VOCDetection(root, image_sets=(("2007", "test"),))
    assert "test.txt" in str(e.value)


# ============================================================================ collate / workers
def test_collate_and_padded(coco_tiny):
    ds = COCODetection(IMAGES, TRAIN_JSON)
    batch = [ds[0], ds[1], ds[2]]
    images, targets = collate(batch)
    assert len(images) == 3 and targets[1]["image_id"] == ds.ids[1]
    tensor, mask, targets = collate_padded(batch, size_divisibility=32)
    hmax = max(im.shape[1] for im in images)
    wmax = max(im.shape[2] for im in images)
    assert tensor.shape == (3, 3, -(-hmax // 32) * 32, -(-wmax // 32) * 32) and tensor.dtype == torch.uint8
    for k, im in enumerate(images):
        assert mask[k].sum() == im.shape[1] * im.shape[2]
        assert torch.equal(tensor[k, :, : im.shape[1], : im.shape[2]], im)


def _run_loader(ds, seed):
    """Image 0, twelve times, with the per-sample seeds training gives ((index, seed) items), on two workers."""
    loader = DataLoader(SeededDataset(ds), batch_size=2, sampler=[(0, seed * 100 + k) for k in range(12)],
                        num_workers=2, collate_fn=collate, timeout=120)  # fail instead of hanging if a worker deadlocks
    out = []
    for images, targets in loader:
        assert len(images) == 2 and images[0].dtype == torch.uint8
        out.append([(tuple(t["size"].tolist()), t["boxes"].numpy().round(3).tobytes()) for t in targets])
    return out


def test_dataloader_two_workers_different_augmentations(coco_tiny):
    ds = COCODetection(IMAGES, TRAIN_JSON, transforms=build_transforms(True))
    batches = _run_loader(ds, seed=0)
    assert len(batches) == 6
    worker0 = [s for b in batches[0::2] for s in b]  # in-order loading: batch k comes from worker k % 2
    worker1 = [s for b in batches[1::2] for s in b]
    assert worker0 != worker1
    assert len(set(worker0 + worker1)) >= 4  # the same image got many different augmentations
    assert batches == _run_loader(ds, seed=0)  # reproducible for a fixed loader seed
    assert batches != _run_loader(ds, seed=1)


def test_image_cache_decodes_each_file_once_and_hands_out_private_copies(coco_tiny, monkeypatch):
    """data.cache_images: the same pixels as a fresh decode, one cv2.imread per image, and a caller writing into
    the image it got (as an in-place transform would) does not change what the next read returns."""
    plain = COCODetection(IMAGES, TRAIN_JSON)
    cached = COCODetection(IMAGES, TRAIN_JSON)
    cached.keep_images_in_memory()
    calls = Counter()
    real_imread = cv2.imread

    def counting_imread(path, *args):
        calls[path] += 1
        return real_imread(path, *args)

    monkeypatch.setattr(cv2, "imread", counting_imread)
    n = len(cached)
    for _ in range(3):
        for i in range(n):
            image, reason = cached.decoded_image(i)
            assert reason == "" and np.array_equal(image, plain.read_image(plain.get_file_name(i))[0])
            image[:] = 0  # a transform writing in place
    for i in range(n):
        assert calls[cached.get_file_name(i)] == 1 + 3  # one cached decode + the three reads of ``plain``
    assert cached[0][0].float().mean() > 0  # __getitem__ goes through the cache: not the zeroed copy


def test_image_cache_keeps_unreadable_images_skipped(tmp_path):
    img_dir, ann, _ = _write_coco(tmp_path, n_images=3)
    (img_dir / "img1.jpg").write_bytes(b"this is not a jpeg")
    ds = COCODetection(img_dir, ann)
    ds.keep_images_in_memory()
    assert ds[1][1]["image_id"] == 102 and ds.num_skipped == 1  # skipped as without the cache
    assert ds[1][1]["image_id"] == 102 and 1 not in ds._image_cache


def test_the_training_split_keeps_arrays_not_a_pycocotools_index(tmp_path):
    """A 5000-image COCO file: the training dataset holds no COCO object (nor the parsed JSON); the evaluation
    split does."""
    from pycocotools.coco import COCO

    from data.build import build_dataset

    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "train").mkdir()
    rng = np.random.default_rng(0)
    images = [{"id": i, "file_name": f"{i:06d}.jpg", "height": 480, "width": 640} for i in range(1, 5001)]
    anns = [{"id": k, "image_id": int(rng.integers(1, 5001)), "category_id": int(rng.integers(1, 4)),
             "bbox": [10.0, 20.0, 50.0, 40.0], "area": 2000.0, "iscrowd": 0} for k in range(1, 20001)]
    data = {"images": images, "annotations": anns, "categories": [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)]}
    (root / "annotations" / "instances_train.json").write_text(json.dumps(data))
    cfg = load_config(REPO / "config/small_cpu.yaml", {"data.dataset": "coco", "data.root": str(root),
                                                        "model.num_classes": 3})
    ds = build_dataset(cfg, "train", is_train=True)
    assert len(ds) > 4000 and ds._coco is None
    reachable = _reachable(ds)
    assert not any(type(o) is COCO for o in reachable)
    assert not any(type(o) is dict and ("annotations" in o or "bbox" in o) for o in reachable)  # nor the JSON
    assert len(reachable) < len(anns) / 2  # packed arrays, not an object per annotation


def _reachable(root, limit: int = 200_000) -> list:
    """The objects reachable from ``root`` (through gc referents; modules, classes and functions not followed)."""
    seen, todo, out = {id(root)}, [root], []
    while todo and len(out) < limit:
        obj = todo.pop()
        out.append(obj)
        for ref in gc.get_referents(obj):
            if id(ref) not in seen and not isinstance(ref, (type, types.ModuleType, types.FunctionType)):
                seen.add(id(ref))
                todo.append(ref)
    return out
