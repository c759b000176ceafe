"""The YOLO-style pipeline of the CSP-D-53 recipes on hand-made cases: data/yolo_transforms.py, data/mosaic.py,
data/pipelines.py (JitterCrop, Resize with scale jitter, RandomDistortion, Mosaic, the named pipelines)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from config import ConfigError, load_config
from config.listing import family_names
from data.build import SeededDataset, build_dataset
from data.mosaic import Mosaic, place_mosaic
from data.pipelines import build_per_image_train_steps, build_pipeline
from data.transforms import (PAD_KEY, ClipAndFilterBoxes, Compose, RandomFlip, RandomShift, ResizeShortestEdge,
                             build_transforms)
from data.yolo_transforms import JitterCrop, RandomDistortion, Resize
from tests.conftest import REPO

COCO_SPLIT = "val2017"  # the split of the coco_tiny fixture


class FixedIntegers:
    """A Generator stand-in whose ``integers`` returns preset values, recording the (low, high) asked for."""

    def __init__(self, values):
        self.values, self.calls = list(values), []

    def integers(self, low, high):
        self.calls.append((low, high))
        return self.values.pop(0)


def _box_image(h, w, boxes, value=255):
    """Black HxWx3 uint8 image with each integer box [x1, y1, x2, y2] painted ``value`` (pixels x1..x2-1)."""
    img = np.zeros((h, w, 3), np.uint8)
    for x1, y1, x2, y2 in np.asarray(boxes, int):
        img[y1:y2, x1:x2] = value
    return img


def _bright_bbox(img, thresh=127):
    """Bounding box [x1, y1, x2, y2) of the pixels brighter than ``thresh`` (continuous coordinates)."""
    ys, xs = np.nonzero(img[..., 0] > thresh)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)


def _target(boxes, labels=None):
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    labels = np.arange(len(boxes), dtype=np.int64) if labels is None else np.asarray(labels, np.int64)
    return {"boxes": boxes, "labels": labels, "crowd_boxes": np.zeros((0, 4))}


# ----------------------------------------------------------------------------- JitterCrop
def test_jitter_crop_hand_made_moves_fill_and_padding():
    img = _box_image(100, 120, [[30, 20, 70, 60]])
    rng = FixedIntegers([-10, 15, 5, -8])  # left pads 10, right crops 15, top crops 5, bottom pads 8
    out, tgt = JitterCrop(0.3)(img, _target([[30, 20, 70, 60], [0, 0, 12, 4]]), rng)
    assert rng.calls == [(-36, 36), (-36, 36), (-30, 30), (-30, 30)]  # d = int(0.3 * side), upper bound exclusive
    assert out.shape == (100 - 5 + 8, 120 + 10 - 15, 3)  # (103, 115)
    # boxes move by (-left, -top) = (+10, -5) and are clipped to the crop: the second box loses its top
    np.testing.assert_array_equal(tgt["boxes"], [[40, 15, 80, 55], [10, 0, 22, 0]])
    fill = int(img[..., 0].mean())  # 40 * 40 * 255 / 12000 = 34.0 -> 34 (truncated, like the official code)
    assert fill == 34 and (out[:, :10] == fill).all() and (out[-8:] == fill).all()  # the padded columns / rows
    np.testing.assert_array_equal(out[:95, 10:], img[5:, :105])  # the kept part of the input
    assert tgt[PAD_KEY] == (10.0, 0.0, 0.0, 8.0)
    assert img[..., 0].sum() == 40 * 40 * 255  # input untouched
    # the degenerate (zero-height) box is dropped with its label by the final clip
    _, clean = ClipAndFilterBoxes()(out, tgt)
    np.testing.assert_array_equal(clean["labels"], [0])


@pytest.mark.parametrize("seed", range(6))
def test_jitter_crop_boxes_stay_on_their_pixels(seed):
    boxes = [[30, 20, 70, 60], [90, 70, 118, 98]]
    img = _box_image(100, 120, boxes)
    out, tgt = JitterCrop(0.3)(img, _target(boxes), np.random.default_rng(seed))
    _, tgt = ClipAndFilterBoxes()(out, tgt)
    # integer moves: every white pixel is inside a box and every box is white (exact areas)
    white = out[..., 0] == 255
    area = sum(int((x2 - x1) * (y2 - y1)) for x1, y1, x2, y2 in tgt["boxes"])
    assert white.sum() == area
    for x1, y1, x2, y2 in tgt["boxes"].astype(int):
        assert white[y1:y2, x1:x2].all()


def test_jitter_crop_draw_ranges():
    jc, moves = JitterCrop(0.3), []
    rng = np.random.default_rng(0)
    for _ in range(300):
        moves.append(jc.sample(50, 100, rng))  # (h, w): d = 30 horizontally, 15 vertically
    moves = np.array(moves)
    assert moves[:, :2].min() == -30 and moves[:, :2].max() == 29
    assert moves[:, 2:].min() == -15 and moves[:, 2:].max() == 14


# ----------------------------------------------------------------------------- Resize
def test_resize_fixed_shape_does_not_keep_aspect_and_scales_axes_separately():
    img = _box_image(100, 100, [[20, 40, 60, 80]])
    out, tgt = Resize((50, 200))(img, {**_target([[20, 40, 60, 80]]), PAD_KEY: (4.0, 10.0, 0.0, 2.0)}, None)
    assert out.shape == (50, 200, 3)
    np.testing.assert_allclose(tgt["boxes"], [[40, 20, 120, 40]])  # x * 2, y * 0.5
    np.testing.assert_allclose(_bright_bbox(out), tgt["boxes"][0], atol=1)
    assert tgt[PAD_KEY] == (8.0, 5.0, 0.0, 1.0)


def test_resize_scale_jitter_draw_and_shape():
    r = Resize((640, 640), scale_jitter=(0.8, 1.2))
    rng, ref = np.random.default_rng(5), np.random.default_rng(5)
    shapes = [r.sample_shape(rng) for _ in range(200)]
    s = ref.uniform(0.8, 1.2)
    assert shapes[0] == (int(640 * s), int(640 * s))  # one draw per image, truncated like the official int()
    sides = np.array(shapes)[:, 0]
    assert sides.min() >= 512 and sides.max() < 768 and sides.max() - sides.min() > 200
    # the official code's numpy global calls, reproduced with a RandomState
    np.random.seed(3)
    official = np.random.uniform(0.8, 1.2)
    assert r.sample_shape(np.random.RandomState(3)) == (int(640 * official), int(640 * official))


# ----------------------------------------------------------------------------- RandomDistortion
def test_distortion_hand_made_colours():
    red, grey = np.array([0, 0, 255], np.uint8), np.array([100, 100, 100], np.uint8)
    img = np.stack([np.tile(red, (4, 4, 1)), np.tile(grey, (4, 4, 1))])  # (2, 4, 4, 3) -> one 8x4 image
    img = img.reshape(8, 4, 3)
    # red has OpenCV hue 0: +30.5 -> 30 = yellow; -29.5 wraps modulo 180 to 150.5 -> 150 = magenta
    yellow = RandomDistortion.distort(img, 30.5 / 179, 1.0, 1.0)
    magenta = RandomDistortion.distort(img, -29.5 / 179, 1.0, 1.0)
    np.testing.assert_array_equal(yellow[0, 0], [0, 255, 255])
    np.testing.assert_array_equal(magenta[0, 0], [255, 0, 255])
    np.testing.assert_array_equal(yellow[4:], img[4:])  # grey has no saturation: a hue shift leaves it
    brighter = RandomDistortion.distort(img, 0.0, 1.0, 2.0)  # V 100 -> 200 (exposure), red stays clipped at 255
    np.testing.assert_array_equal(brighter[4, 0], [200, 200, 200])
    np.testing.assert_array_equal(brighter[0, 0], [0, 0, 255])
    paler = RandomDistortion.distort(img, 0.0, 0.5, 1.0)  # S 255 -> 127: red becomes (128, 128, 255)
    np.testing.assert_array_equal(paler[0, 0], [128, 128, 255])


@pytest.mark.parametrize("seed", range(3))
def test_distortion_changes_colours_only(seed):
    boxes = [[10, 10, 30, 40]]
    img = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    target = _target(boxes)
    out, tgt = RandomDistortion(0.1, 1.5, 1.5)(img, target, np.random.default_rng(seed))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert tgt is target and np.array_equal(tgt["boxes"], boxes)
    assert not np.array_equal(out, img)
    # a colour change only: pixel order (where the image is bright or dark) survives
    bright, dark = img.max(axis=2) > 200, img.max(axis=2) < 40
    assert out.max(axis=2)[bright].mean() > out.max(axis=2)[dark].mean()


def test_distortion_draw_order_and_ranges():
    d = RandomDistortion(0.1, 1.5, 1.5)
    ref = np.random.RandomState(4)
    dhue = ref.uniform(-0.1, 0.1)
    u_sat, keep_sat = ref.uniform(1, 1.5), ref.rand() > 0.5
    u_exp, keep_exp = ref.uniform(1, 1.5), ref.rand() > 0.5
    expected = (dhue, u_sat if keep_sat else 1 / u_sat, u_exp if keep_exp else 1 / u_exp)
    np.testing.assert_allclose(d.sample(np.random.RandomState(4)), expected)
    draws = np.array([d.sample(np.random.default_rng(s)) for s in range(200)])
    assert np.abs(draws[:, 0]).max() < 0.1
    assert draws[:, 1:].min() >= 1 / 1.5 and draws[:, 1:].max() <= 1.5
    assert (draws[:, 1] < 1).any() and (draws[:, 1] > 1).any()


# ----------------------------------------------------------------------------- Mosaic
def _coded_image(k, h, w):
    """Pixel (y, x) of image k is (k, y, x): where a mosaic pixel came from is readable from its value."""
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([np.full((h, w), k), ys, xs], axis=-1).astype(np.uint8)


def test_place_mosaic_hand_made():
    # canvas 100 x 120 (h, w), cut at x = 50, y = 40: quadrants 50x40, 70x40, 50x60, 70x60 (w x h)
    parts = [
        (_coded_image(0, 70, 80), {**_target([[10, 8, 30, 20], [40, 10, 75, 30]], [0, 1]), PAD_KEY: (7.0, 5.0, 0, 0)}),
        (_coded_image(1, 60, 90), _target([[30, 5, 60, 25]], [2])),
        (_coded_image(2, 80, 70), _target([[0, 0, 10, 10]], [3])),
        (_coded_image(3, 70, 100), _target([[40, 20, 60, 50]], [4])),
    ]
    out, tgt = place_mosaic(parts, (50, 40), (100, 120))
    assert out.shape == (100, 120, 3) and PAD_KEY not in tgt
    # top-left: image 0 from (7, 5), past its padding (skip = min(pad, cut, side - cut) = 7 and 5)
    np.testing.assert_array_equal(out[0, 0], [0, 5, 7])
    np.testing.assert_array_equal(out[39, 49], [0, 44, 56])
    # top-right: image 1's top-right corner; source x starts at 90 - 70 = 20
    np.testing.assert_array_equal(out[0, 50], [1, 0, 20])
    np.testing.assert_array_equal(out[39, 119], [1, 39, 89])
    # bottom-left: image 2's bottom-left corner; source y starts at 80 - 60 = 20
    np.testing.assert_array_equal(out[40, 0], [2, 20, 0])
    np.testing.assert_array_equal(out[99, 49], [2, 79, 49])
    # bottom-right: image 3 from x = 100 - 70 = 30, y = 70 - 60 = 10
    np.testing.assert_array_equal(out[40, 50], [3, 10, 30])
    np.testing.assert_array_equal(out[99, 119], [3, 69, 99])
    expected = [
        [3, 3, 23, 15],  # image 0: - (7, 5)
        [33, 5, 50, 25],  # image 0: - (7, 5), clipped at the cut x = 50
        [60, 5, 90, 25],  # image 1: - (20, 0) + (50, 0)
        [0, 40, 10, 40],  # image 2: above its window (y - 20 < 0): empty
        [60, 50, 80, 80],  # image 3: - (30, 10) + (50, 40)
    ]
    np.testing.assert_array_equal(tgt["boxes"], expected)
    np.testing.assert_array_equal(tgt["labels"], [0, 1, 2, 3, 4])
    _, clean = ClipAndFilterBoxes()(out, tgt)
    np.testing.assert_array_equal(clean["labels"], [0, 1, 2, 4])  # the empty box is dropped with its label


def test_place_mosaic_image_smaller_than_its_quadrant_keeps_the_outer_corner():
    parts = [(_coded_image(k, 30, 30), _target([[0, 0, 30, 30]])) for k in range(4)]
    out, tgt = place_mosaic(parts, (50, 40), (100, 120))
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])
    assert (out[30:40, :50] == 0).all() and (out[:40, 30:50] == 0).all()
    np.testing.assert_array_equal(out[99, 119], [3, 29, 29])  # image 3 ends at the canvas corner
    np.testing.assert_array_equal(tgt["boxes"], [[0, 0, 30, 30], [90, 0, 120, 30], [0, 70, 30, 100],
                                                 [90, 70, 120, 100]])


def test_mosaic_draws_cut_and_images_from_the_sample_rng():
    sources = [(_coded_image(k, 60, 70), _target([[5, 5, 20, 20]], [k])) for k in range(5)]
    mosaic = Mosaic(Compose([]), sources, prob=1.0, size=(64, 80), min_offset=0.25)
    out, tgt = mosaic(*sources[0], np.random.default_rng(11))
    ref = np.random.default_rng(11)
    assert ref.uniform(0.0, 1.0) < 1.0
    cut_x, cut_y = int(ref.integers(20, 60)), int(ref.integers(16, 48))  # [int(80 * .25), int(80 * .75)) ...
    others = [int(ref.integers(0, 5)) for _ in range(3)]
    expected, _ = place_mosaic([sources[0]] + [sources[i] for i in others], (cut_x, cut_y), (64, 80))
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(tgt["labels"], [0] + others)
    assert out[0, 0, 0] == 0 and out[63, 79, 0] == others[2]  # quadrant k shows image k
    # prob 0: the per-image pipeline alone, and no mosaic draw
    rng = np.random.default_rng(2)
    same, _ = Mosaic(Compose([]), sources, prob=0.0)(*sources[1], rng)
    assert same is sources[1][0] and rng.uniform() == np.random.default_rng(2).uniform()


def test_mosaic_probability():
    sources = [(_coded_image(k, 64, 80), _target([[5, 5, 20, 20]])) for k in range(4)]
    mosaic = Mosaic(Compose([]), sources, prob=0.5, size=(32, 32), min_offset=0.2)
    rng = np.random.default_rng(0)
    n = sum(mosaic(*sources[0], rng)[0].shape[:2] == (32, 32) for _ in range(400))
    assert 160 < n < 240


def test_yolo_pipeline_with_mosaic_keeps_boxes_on_their_pixels():
    """JitterCrop -> Resize with jitter -> flip -> shift -> mosaic (no distortion: white stays white)."""
    boxes = [[20, 30, 70, 90], [100, 10, 150, 50]]
    sources = [(_box_image(120, 160, boxes), _target(boxes)) for _ in range(4)]
    cfg = load_config(None, ["data.pipeline=yolo", "data.yolo.distortion=false", "data.yolo.resize_shape=[128, 160]"])
    per_image = build_per_image_train_steps(cfg.data)
    pipeline = Compose([Mosaic(per_image, sources, prob=1.0, size=(128, 128)), ClipAndFilterBoxes()])
    for seed in range(8):
        out, tgt = pipeline(*sources[seed % 4], np.random.default_rng(seed))
        assert out.shape == (128, 128, 3) and len(tgt["boxes"]) == len(tgt["labels"]) > 0
        bright = out[..., 0] > 127
        inside = np.zeros_like(bright)
        for x1, y1, x2, y2 in tgt["boxes"]:
            assert x2 > x1 and y2 > y1 and x1 >= 0 and y1 >= 0 and x2 <= 128 and y2 <= 128
            inner = out[int(np.ceil(y1)) + 1:int(y2) - 1, int(np.ceil(x1)) + 1:int(x2) - 1, 0]
            assert inner.size == 0 or inner.min() > 127, (seed, x1, y1, x2, y2)
            inside[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))] = True
        assert not (bright & ~inside).any(), seed  # no white pixel outside every box


def test_flip_swaps_and_shift_keeps_the_jitter_padding():
    img, tgt = np.zeros((10, 20, 3), np.uint8), {**_target([[1, 1, 5, 5]]), PAD_KEY: (3.0, 1.0, 0.0, 2.0)}
    _, flipped = RandomFlip(1.0)(img, tgt, np.random.default_rng(0))
    assert flipped[PAD_KEY] == (0.0, 1.0, 3.0, 2.0) and tgt[PAD_KEY] == (3.0, 1.0, 0.0, 2.0)
    _, shifted = RandomShift(max_shifts=4, prob=1.0)(img, tgt, np.random.default_rng(0))
    assert shifted[PAD_KEY] == tgt[PAD_KEY]  # as official: the mosaic ignores the shift


# ----------------------------------------------------------------------------- pipelines and config
def test_default_config_keeps_the_resnet_pipeline():
    d = load_config(None).data
    assert d.pipeline == "resize_shortest_edge" and d.mosaic.prob == 0.0
    assert repr(build_pipeline(d, True)) == repr(build_transforms(True, (800,), 1333, flip_prob=0.5, shift_max=32,
                                                                    shift_prob=0.5, random_shift=True))
    assert repr(build_pipeline(d, False)) == repr(build_transforms(False, 800, 1333))


def test_yolo_pipelines_official_parameters():
    d = load_config(None, ["data.pipeline=yolo"]).data
    train = build_pipeline(d, True)
    assert [repr(t) for t in train.transforms] == [
        "JitterCrop(jitter_ratio=0.3)", "Resize(shape=(640, 640), scale_jitter=(0.8, 1.2))",
        "RandomDistortion(hue=0.1, saturation=1.5, exposure=1.5)", "RandomFlip(prob=0.5)",
        "RandomShift(max_shifts=32, prob=0.5)", "ClipAndFilterBoxes()"]
    test = build_pipeline(d, False)
    out, tgt = test(np.zeros((300, 500, 3), np.uint8), _target([[50, 30, 250, 150]]), None)
    assert out.shape == (608, 608, 3)  # fixed, not aspect-preserving
    np.testing.assert_allclose(tgt["boxes"], [[50 * 608 / 500, 30 * 608 / 300, 250 * 608 / 500, 150 * 608 / 300]],
                               rtol=1e-6)


@pytest.mark.parametrize("override, key", [
    ("data.pipeline=yolov5", "data.pipeline"),
    ("data.yolo.jitter_ratio=0.5", "data.yolo.jitter_ratio"),
    ("data.yolo.scale_jitter=[1.2, 0.8]", "data.yolo.scale_jitter"),
    ("data.yolo.saturation=0.5", "data.yolo.saturation"),
    ("data.mosaic.prob=1.5", "data.mosaic.prob"),
    ("data.mosaic.min_offset=0.5", "data.mosaic.min_offset"),
    ("data.yolo.test_resize_shape=[0, 608]", "data.yolo.test_resize_shape"),
])
def test_bad_pipeline_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_model_maps_boxes_back_by_separate_x_and_y_factors():
    from models import build_model

    torch.manual_seed(0)
    model = build_model(load_config(REPO / "config/small_cpu.yaml", {"model.test.score_thresh": 0.0})).eval()
    x = torch.rand(3, 128, 160) * 255
    with torch.no_grad():
        a = model([x])[0]
        b = model([x], output_sizes=[(256, 480)])[0]  # y x 2, x x 3 (a 608 x 608 input mapped back likewise)
    n = min(len(a["boxes"]), len(b["boxes"]))
    assert n > 0
    torch.testing.assert_close(b["boxes"][:n], a["boxes"][:n] * torch.tensor([3.0, 2.0, 3.0, 2.0]), atol=1e-3, rtol=0)


def test_dataset_mosaic_sample_is_a_pure_function_of_index_and_seed(coco_tiny):
    cfg = load_config(None, [f"data.root={coco_tiny}", f"data.train_split={COCO_SPLIT}", "data.pipeline=yolo",
                             "data.mosaic.prob=1.0", "data.yolo.resize_shape=[160, 160]",
                             "data.mosaic.size=[160, 160]"])
    ds = SeededDataset(build_dataset(cfg, COCO_SPLIT, is_train=True))
    (a, ta), (b, tb) = ds[(2, 123)], ds[(2, 123)]
    assert a.shape == (3, 160, 160) and torch.equal(a, b) and torch.equal(ta["boxes"], tb["boxes"])
    torch.testing.assert_close(ta["labels"], tb["labels"])
    c, _ = ds[(2, 124)]
    assert not torch.equal(a, c)
    # eval on the same config: the fixed test resize, boxes in the 608 x 608 frame
    image, target = build_dataset(cfg, COCO_SPLIT, is_train=False)[0]
    assert image.shape[1:] == (608, 608) and target["size"].tolist() == [608, 608]



@pytest.mark.parametrize("name", family_names()["data.pipeline"])
def test_every_pipeline_name_builds_its_steps_with_the_configs_switches(name):
    """The official recipes' steps (data/pipelines.py's docstring), each switch of data and data.yolo removing its
    own step, and the parameters given to each step taken from the config."""
    def steps(**opts):
        d = load_config(None, {"data.pipeline": name, **opts}).data
        return tuple([type(t) for t in build_pipeline(d, is_train).transforms] for is_train in (True, False))

    train, test = {
        "resize_shortest_edge": ([ResizeShortestEdge, RandomFlip, RandomShift, ClipAndFilterBoxes],
                                 [ResizeShortestEdge, ClipAndFilterBoxes]),
        "yolo": ([JitterCrop, Resize, RandomDistortion, RandomFlip, RandomShift, ClipAndFilterBoxes],
                 [Resize, ClipAndFilterBoxes]),
    }[name]
    assert steps() == (train, test)
    assert steps(**{"data.random_shift": False})[0] == [t for t in train if t is not RandomShift]
    if name == "yolo":
        assert steps(**{"data.yolo.jitter_crop": False, "data.yolo.distortion": False})[0] == \
            [Resize, RandomFlip, RandomShift, ClipAndFilterBoxes]
        d = load_config(None, {"data.pipeline": "yolo", "data.yolo.test_resize_shape": [320, 480]}).data
        assert build_pipeline(d, False).transforms[0].shape == (320, 480)
