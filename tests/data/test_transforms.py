"""Tests for data/transforms.py against the official YOLOF RandomShift golden file and hand-computed cases."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from data.transforms import (
    ClipAndFilterBoxes,
    Compose,
    RandomFlip,
    RandomShift,
    ResizeShortestEdge,
    build_transforms,
    shift_image_and_boxes,
)
from tests.conftest import golden_path

@pytest.fixture(scope="module")
def golden():
    with open(golden_path("random_shift.json")) as f:
        return json.load(f)


def _examples(golden):
    return list(golden["worked_examples"].items())


def _unclipped_key(ex):
    return next(k for k in ex if k.startswith("boxes_after_transform_xyxy"))


def _clip_key(ex):
    return next(k for k in ex if k.startswith("boxes_after_clip"))


class FakeRng:
    """Returns the patched values of a worked example and records the calls made, in order."""

    def __init__(self, uniform_value, randint_values):
        self.uniform_value = uniform_value
        self.randint_values = list(randint_values)
        self.calls = []

    def uniform(self, low, high):
        self.calls.append(("uniform", low, high))
        return self.uniform_value

    def integers(self, low, high):
        self.calls.append(("randint", low, high))
        return self.randint_values.pop(0)


# ----------------------------------------------------------------------------- RandomShift golden
def test_golden_examples_shift_function(golden):
    assert len(_examples(golden)) == 3
    for name, ex in _examples(golden):
        img = np.array(ex["input_image_HWC_uint8"], dtype=np.uint8)
        boxes = np.array(ex["input_boxes_xyxy"], dtype=np.float32)
        shifts = ex["patched_return_values"]["np.random.randint (in call order)"]
        if not shifts:  # the no-op example: shift (0, 0) must also be the identity
            shifts = [0, 0]
        out_img, out_boxes = shift_image_and_boxes(img, boxes, shifts[0], shifts[1])
        np.testing.assert_array_equal(out_img, np.array(ex["output_image_HWC_uint8"], dtype=np.uint8), err_msg=name)
        assert out_img.dtype == np.uint8 and out_img.shape == img.shape
        np.testing.assert_array_equal(out_boxes, np.array(ex[_unclipped_key(ex)], dtype=np.float32), err_msg=name)
        # input untouched
        np.testing.assert_array_equal(img, np.array(ex["input_image_HWC_uint8"], dtype=np.uint8))


def test_golden_examples_clip_and_filter(golden):
    for name, ex in _examples(golden):
        img = np.array(ex["output_image_HWC_uint8"], dtype=np.uint8)
        n = len(ex["input_boxes_xyxy"])
        target = {
            "boxes": np.array(ex[_unclipped_key(ex)], dtype=np.float32),
            "labels": np.arange(n, dtype=np.int64),  # the examples use classes 0, 1, 2
            "index": np.arange(n),
        }
        _, out = ClipAndFilterBoxes()(img, target, None)
        kept = np.zeros(n, dtype=bool)
        kept[out["index"]] = True
        np.testing.assert_array_equal(kept, np.array(ex["kept_after_filter_empty_instances"]), err_msg=name)
        clipped = np.array(ex[_clip_key(ex)], dtype=np.float32)
        np.testing.assert_array_equal(out["boxes"], clipped[kept], err_msg=name)
        np.testing.assert_array_equal(out["boxes"], np.array(ex["final_boxes"], dtype=np.float32).reshape(-1, 4))
        np.testing.assert_array_equal(out["labels"], np.array(ex["final_classes"]))
        assert out["boxes"].dtype == np.float32


def test_golden_examples_draw_order_through_transform(golden):
    """RandomShift + ClipAndFilterBoxes with the patched draws reproduces each example end to end."""
    for name, ex in _examples(golden):
        patched = ex["patched_return_values"]
        rng = FakeRng(patched["np.random.uniform"], patched["np.random.randint (in call order)"])
        img = np.array(ex["input_image_HWC_uint8"], dtype=np.uint8)
        target = {"boxes": np.array(ex["input_boxes_xyxy"], dtype=np.float64),
                  "labels": np.arange(len(ex["input_boxes_xyxy"]))}
        pipeline = Compose([RandomShift(max_shifts=32, prob=0.5), ClipAndFilterBoxes()])
        out_img, out = pipeline(img, target, rng)
        np.testing.assert_array_equal(out_img, np.array(ex["output_image_HWC_uint8"], dtype=np.uint8), err_msg=name)
        np.testing.assert_array_equal(out["boxes"], np.array(ex["final_boxes"], dtype=np.float32).reshape(-1, 4))
        np.testing.assert_array_equal(out["labels"], np.array(ex["final_classes"]))
        expected_calls = []
        for call in ex["rng_calls_made_by_official_code"]:
            if call[0] == "np.random.uniform":
                expected_calls.append(("uniform", float(call[1]), float(call[2])))
            else:
                expected_calls.append(("randint", call[1], call[2]))
        assert [(c[0], float(c[1]), float(c[2])) if c[0] == "uniform" else c for c in rng.calls] == expected_calls


def test_golden_shift_unclipped_inside_transform(golden):
    """The transform itself never clips (clip happens in ClipAndFilterBoxes)."""
    name, ex = next((n, e) for n, e in _examples(golden) if n.startswith("B_"))
    rng = FakeRng(0.2, [-3, 2])
    img = np.array(ex["input_image_HWC_uint8"], dtype=np.uint8)
    _, out = RandomShift()(img, {"boxes": np.array(ex["input_boxes_xyxy"], np.float32), "labels": np.arange(3)}, rng)
    np.testing.assert_array_equal(out["boxes"], np.array(ex[_unclipped_key(ex)], dtype=np.float32))
    assert (out["boxes"] < 0).any()


def test_legacy_randomstate_reproduces_official_seeded_draws(golden):
    """With np.random.RandomState(s) our draws equal the official code after np.random.seed(s)."""
    draws = golden["seeded_draws_real_rng"]["draws"]
    for d in draws:
        got = RandomShift(max_shifts=32).sample(np.random.RandomState(d["np.random.seed"]))
        if d["transform"] == "NoOpTransform":
            assert got is None, d
        else:
            assert got == (d["shift_x"], d["shift_y"]), d


def test_shift_range_and_probability_with_generator():
    """Generator draws: shifts in [-32, 31] inclusive (exclusive high), applied with probability ~0.5."""
    rng = np.random.default_rng(12345)
    t = RandomShift(max_shifts=32, prob=0.5)
    n = 20000
    samples = [t.sample(rng) for _ in range(n)]
    shifts = np.array([s for s in samples if s is not None])
    frac = len(shifts) / n
    assert abs(frac - 0.5) < 4 * np.sqrt(0.25 / n)  # 4 sigma
    for axis in (0, 1):
        assert shifts[:, axis].min() == -32
        assert shifts[:, axis].max() == 31
        assert set(np.unique(shifts[:, axis])) == set(range(-32, 32))
    # x and y drawn independently
    assert abs(np.corrcoef(shifts[:, 0], shifts[:, 1])[0, 1]) < 0.05
    # prob=0 never shifts, prob=1 always does
    assert all(RandomShift(prob=0.0).sample(rng) is None for _ in range(100))
    assert all(RandomShift(prob=1.0).sample(rng) is not None for _ in range(100))


def test_shift_extremes_and_zero():
    img = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    same, b = shift_image_and_boxes(img, np.array([[1.0, 1.0, 2.0, 2.0]]), 0, 0)
    np.testing.assert_array_equal(same, img)
    np.testing.assert_array_equal(b, [[1.0, 1.0, 2.0, 2.0]])
    out, _ = shift_image_and_boxes(img, None, 7, 0)  # |shift| == size -> all zeros (official behaviour)
    assert not out.any()
    out, _ = shift_image_and_boxes(img, None, -6, -4)
    np.testing.assert_array_equal(out[0, 0], img[4, 6])
    assert out[1:].sum() == 0 and out[:, 1:].sum() == 0


# ----------------------------------------------------------------------------- resize
@pytest.mark.parametrize("hw, expected", [
    ((480, 640), (800, 1067)),    # 640 * 800/480 = 1066.67
    ((427, 640), (800, 1199)),    # 640 * 800/427 = 1199.06
    ((640, 480), (1067, 800)),    # portrait
    ((500, 2000), (333, 1333)),   # long side capped: 800/500=1.6 -> 3200 > 1333 -> *1333/3200 -> 333.25
    ((800, 800), (800, 800)),     # unchanged
    ((1000, 1000), (800, 800)),   # downscale
    ((375, 500), (800, 1067)),    # 500 * 800/375 = 1066.67
    ((600, 1200), (667, 1333)),   # 800/600 -> 1600 > 1333 -> 800*1333/1600 = 666.5 -> int(667.0)
])
def test_resize_shortest_edge_sizes(hw, expected):
    h, w = hw
    img = np.zeros((h, w, 3), dtype=np.uint8)
    out, _ = ResizeShortestEdge((800,), 1333)(img, {"boxes": np.zeros((0, 4)), "labels": np.zeros(0)},
                                              np.random.default_rng(0))
    assert out.shape == (expected[0], expected[1], 3)
    assert out.dtype == np.uint8


def test_resize_box_scaling_and_content():
    img = np.zeros((480, 640, 3), dtype=np.uint8)
    img[:, 320:] = 200  # right half bright
    boxes = np.array([[10.0, 20.0, 330.0, 480.0], [0.0, 0.0, 640.0, 480.0]], dtype=np.float32)
    crowd = np.array([[64.0, 48.0, 128.0, 96.0]])
    out, tgt = ResizeShortestEdge((800,), 1333)(img, {"boxes": boxes, "labels": np.array([3, 4]),
                                                      "crowd_boxes": crowd}, np.random.default_rng(0))
    sx, sy = 1067 / 640, 800 / 480
    np.testing.assert_allclose(tgt["boxes"], [[10 * sx, 20 * sy, 330 * sx, 480 * sy], [0, 0, 1067, 800]], rtol=1e-6)
    np.testing.assert_allclose(tgt["crowd_boxes"], [[64 * sx, 48 * sy, 128 * sx, 96 * sy]], rtol=1e-6)
    np.testing.assert_array_equal(tgt["labels"], [3, 4])
    np.testing.assert_array_equal(boxes[0], [10.0, 20.0, 330.0, 480.0])  # input not modified
    assert out[:, :530].max() == 0 and out[:, 537:].min() == 200  # edge ends up near x = 320*sx = 533.5
    np.testing.assert_array_equal(out, cv2.resize(img, (1067, 800), interpolation=cv2.INTER_LINEAR))


def test_resize_choice_sampling():
    t = ResizeShortestEdge((640, 672, 704), 1333, sample_style="choice")
    rng = np.random.default_rng(0)
    img = np.zeros((100, 150, 3), np.uint8)  # long side stays < 1333 for every size
    sizes = {t(img, {"boxes": np.zeros((0, 4)), "labels": np.zeros(0)}, rng)[0].shape[0] for _ in range(60)}
    assert sizes == {640, 672, 704}
    r = ResizeShortestEdge((10, 12), 1333, sample_style="range")
    sizes = {r.sample_size(rng) for _ in range(200)}
    assert sizes == {10, 11, 12}


# ----------------------------------------------------------------------------- flip
def test_flip_hand_made_box_and_twice_identity():
    img = np.arange(4 * 10 * 3, dtype=np.uint8).reshape(4, 10, 3)
    target = {"boxes": np.array([[1.0, 0.5, 4.0, 3.0]], dtype=np.float32), "labels": np.array([7]),
              "difficult": np.array([True])}
    flip = RandomFlip(prob=1.0)
    out, tgt = flip(img, target, np.random.default_rng(0))
    np.testing.assert_array_equal(tgt["boxes"], [[6.0, 0.5, 9.0, 3.0]])  # x1' = 10-4, x2' = 10-1
    np.testing.assert_array_equal(out, img[:, ::-1])
    np.testing.assert_array_equal(tgt["difficult"], [True])
    back, tgt2 = flip(out, tgt, np.random.default_rng(0))
    np.testing.assert_array_equal(back, img)
    np.testing.assert_array_equal(tgt2["boxes"], target["boxes"])
    # prob 0 -> unchanged
    same, tgt3 = RandomFlip(prob=0.0)(img, target, np.random.default_rng(0))
    np.testing.assert_array_equal(same, img)
    np.testing.assert_array_equal(tgt3["boxes"], target["boxes"])


def test_flip_probability():
    rng = np.random.default_rng(1)
    img = np.zeros((2, 3, 3), np.uint8)
    target = {"boxes": np.array([[0.0, 0.0, 1.0, 1.0]]), "labels": np.array([0])}
    flips = sum(RandomFlip(0.5)(img, target, rng)[1]["boxes"][0, 0] == 2.0 for _ in range(4000))
    assert abs(flips / 4000 - 0.5) < 0.04


# ----------------------------------------------------------------------------- clip / filter
def test_clip_and_filter_per_box_arrays():
    img = np.zeros((50, 100, 3), np.uint8)
    target = {
        "boxes": np.array([[-5, -5, 20, 20], [90, 40, 120, 60], [100, 10, 130, 20], [10, 10, 10, 30],
                           [5, 5, 6, 5.5]], dtype=np.float64),
        "labels": np.array([0, 1, 2, 3, 4]),
        "difficult": np.array([False, True, False, True, False]),
        "crowd_boxes": np.array([[-10.0, -10.0, -1.0, -1.0], [0.0, 0.0, 200.0, 200.0]]),
        "image_id": 17,
    }
    _, out = ClipAndFilterBoxes()(img, target, None)
    np.testing.assert_array_equal(out["boxes"], [[0, 0, 20, 20], [90, 40, 100, 50], [5, 5, 6, 5.5]])
    np.testing.assert_array_equal(out["labels"], [0, 1, 4])
    np.testing.assert_array_equal(out["difficult"], [False, True, False])
    np.testing.assert_array_equal(out["crowd_boxes"], [[0, 0, 100, 50]])
    assert out["image_id"] == 17 and out["boxes"].dtype == np.float32
    # empty targets survive
    _, out = ClipAndFilterBoxes()(img, {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, np.int64)}, None)
    assert out["boxes"].shape == (0, 4) and out["labels"].shape == (0,)
    with pytest.raises(ValueError, match="per-box"):
        ClipAndFilterBoxes()(img, {"boxes": np.zeros((2, 4)), "labels": np.zeros(3)}, None)


# ----------------------------------------------------------------------------- pipelines
def test_build_transforms_structure():
    train = build_transforms(True)
    assert [type(t).__name__ for t in train.transforms] == \
        ["ResizeShortestEdge", "RandomFlip", "RandomShift", "ClipAndFilterBoxes"]
    assert train.transforms[0].short_edge_length == (800,) and train.transforms[0].max_size == 1333
    assert train.transforms[1].prob == 0.5
    assert train.transforms[2].max_shifts == 32 and train.transforms[2].prob == 0.5
    test = build_transforms(False, min_size=800)
    assert [type(t).__name__ for t in test.transforms] == ["ResizeShortestEdge", "ClipAndFilterBoxes"]
    assert build_transforms(False, min_size=(640,)).transforms[0].short_edge_length == (640,)
    with pytest.raises(ValueError):
        build_transforms(False, min_size=(640, 800))
    no_shift = build_transforms(True, random_shift=False)
    assert "RandomShift" not in [type(t).__name__ for t in no_shift.transforms]


def test_train_pipeline_reproducible_and_boxes_inside():
    rng_img = np.random.default_rng(3)
    img = rng_img.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    target = {"boxes": np.array([[0.0, 0.0, 30.0, 40.0], [350.0, 250.0, 400.0, 300.0], [100, 100, 200, 150]]),
              "labels": np.array([1, 2, 3])}
    t = build_transforms(True)
    a = [t(img, target, np.random.default_rng(7)) for _ in range(2)]
    np.testing.assert_array_equal(a[0][0], a[1][0])
    np.testing.assert_array_equal(a[0][1]["boxes"], a[1][1]["boxes"])
    rng = np.random.default_rng(8)
    shapes = set()
    for _ in range(30):
        out, tgt = t(img, target, rng)
        h, w = out.shape[:2]
        shapes.add(out.shape)
        b = tgt["boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= h).all()
        assert ((b[:, 2] - b[:, 0]) > 0).all() and ((b[:, 3] - b[:, 1]) > 0).all()
        assert len(tgt["labels"]) == len(b)
    assert shapes == {(800, 1067, 3)}


def test_output_shape_of_the_deterministic_resizes():
    from data.yolo_transforms import Resize

    # 480 x 640: scale 800 / 480, the longer side 640 * 5 / 3 = 1066.67 -> 1067 (half up); 1333 caps 600 x 2000
    assert ResizeShortestEdge(800, 1333).output_shape(480, 640) == (800, 1067)
    assert ResizeShortestEdge(800, 1333).output_shape(600, 2000) == (400, 1333)
    assert ResizeShortestEdge(0).output_shape(480, 640) == (480, 640)  # size 0: no resize
    assert Resize((608, 600)).output_shape(480, 640) == (608, 600)  # any input: the fixed (h, w)
    with pytest.raises(ValueError, match="samples"):
        ResizeShortestEdge((640, 800)).output_shape(480, 640)
    with pytest.raises(ValueError, match="samples"):
        Resize((608, 608), scale_jitter=(0.8, 1.2)).output_shape(480, 640)
