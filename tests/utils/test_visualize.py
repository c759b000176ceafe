"""Tests for utils/visualize.py (pixel-exact outlines) and evaluation/plots.py."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from evaluation.plots import curve_ap, interpolated_precision, plot_pr_curves
from utils.visualize import class_color, draw_anchor_assignment, draw_boxes, draw_detections

H, W = 120, 160


def blank(value: int = 0) -> np.ndarray:
    return np.full((H, W, 3), value, np.uint8)


def border_mask(x1, y1, x2, y2, t=1, shape=(H, W)) -> np.ndarray:
    """Pixels of an outline drawn on columns x1..x2 / rows y1..y2, t px inwards."""
    m = np.zeros(shape, bool)
    m[y1 : y2 + 1, x1 : x2 + 1] = True
    m[y1 + t : y2 - t + 1, x1 + t : x2 - t + 1] = False
    return m


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.any(a != b, axis=2)


@pytest.mark.parametrize("thickness", [1, 3])
def test_draw_boxes_changes_exactly_the_outline(thickness):
    img = blank()
    out = draw_boxes(img, np.array([[10, 20, 50, 60]]), color=(0, 255, 0), thickness=thickness)
    assert out is not img and img.max() == 0  # new image, input untouched
    want = border_mask(10, 20, 50, 60, thickness)
    np.testing.assert_array_equal(changed(out, img), want)
    assert np.all(out[want] == (0, 255, 0))


def test_draw_boxes_rounding_clipping_and_empty():
    img = blank(7)
    # float coords round to the nearest pixel; the second box is clipped to the
    # image, the third lies fully outside and draws nothing
    out = draw_boxes(img, [[10.4, 19.6, 49.7, 60.2], [-5, -5, 20, 30], [500, 500, 600, 600]], (255, 0, 0))
    want = border_mask(10, 20, 50, 60) | border_mask(0, 0, 20, 30)
    np.testing.assert_array_equal(changed(out, img), want)
    np.testing.assert_array_equal(draw_boxes(img, np.zeros((0, 4))), img)
    with pytest.raises(ValueError):
        draw_boxes(np.zeros((H, W), np.uint8), [[0, 0, 1, 1]])


def test_draw_detections_box_and_label_only():
    img = blank(30)
    names = ["person", "car", "dog"]
    box = (40, 50, 120, 100)
    out = draw_detections(img, [box], [1], [0.87], names, thickness=2, show_text=False)
    # without the text tag: exactly the 2-px outline, in the class colour
    want = border_mask(*box, t=2)
    np.testing.assert_array_equal(changed(out, img), want)
    assert np.all(out[want] == class_color(1))

    out = draw_detections(img, [box], [1], [0.87], names, thickness=2)
    diff = changed(out, img)
    x1, y1, x2, y2 = box
    # outline still there, the inside of the box untouched (tag goes above)
    assert np.all(diff[want])
    assert not diff[y1 + 2 : y2 - 1, x1 + 2 : x2 - 1].any()
    # everything else that changed is the tag: rows above the box, starting at x1
    outside = diff & ~want
    ys, xs = np.nonzero(outside)
    assert len(ys) > 0
    (tw, th), base = cv2.getTextSize("car 0.87", cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
    assert ys.min() >= y1 - (th + base + 2) and ys.max() < y1
    assert xs.min() >= x1 and xs.max() <= x1 + tw + 1
    # the tag background is the class colour
    assert (out[outside] == class_color(1)).all(axis=1).sum() > 0.3 * len(ys)


def test_draw_detections_threshold_colours_and_names():
    img = blank()
    boxes = [[10, 30, 50, 70], [80, 30, 130, 90]]
    # both under the threshold -> unchanged
    out = draw_detections(img, boxes, [0, 2], [0.1, 0.2], ["a", "b", "c"], score_thresh=0.5)
    np.testing.assert_array_equal(out, img)
    # only the second passes
    out = draw_detections(img, boxes, [0, 2], [0.1, 0.6], ["a", "b", "c"], score_thresh=0.5, show_text=False)
    np.testing.assert_array_equal(changed(out, img), border_mask(80, 30, 130, 90, 2))
    # scores None: no threshold, label-only tags; unknown names fall back to the index
    out = draw_detections(img, boxes, [0, 5], None, ["a"], score_thresh=0.99)
    assert changed(out, img)[30, 10] and changed(out, img)[30, 80]
    # deterministic, distinct colours per class; the seed changes them
    assert class_color(3) == class_color(3)
    assert len({class_color(i) for i in range(80)}) == 80
    assert class_color(3, seed=1) != class_color(3, seed=0)
    with pytest.raises(ValueError):
        draw_detections(img, boxes, [0], [0.5, 0.5])


def test_draw_anchor_assignment():
    img = blank()
    gt = [[60, 50, 120, 100]]
    pos = [[55, 45, 125, 105]]
    ign = [[70, 60, 110, 90]]
    out = draw_anchor_assignment(img, gt, pos, ign, legend=False)
    diff = changed(out, img)
    np.testing.assert_array_equal(diff, border_mask(60, 50, 120, 100, 2) | border_mask(55, 45, 125, 105)
                                  | border_mask(70, 60, 110, 90))
    assert tuple(out[50, 90]) == (0, 255, 0)  # gt green
    assert tuple(out[45, 90]) == (0, 0, 255)  # positive red
    assert tuple(out[60, 90]) == (160, 160, 160)  # ignored grey
    # legend: an extra top-left panel (3 lines of ~20 px), nothing else
    img2 = np.full((300, 400, 3), 200, np.uint8)
    gt2, pos2, ign2 = [[150, 150, 250, 250]], [[140, 140, 260, 260]], [[160, 160, 240, 240]]
    boxes_only = changed(draw_anchor_assignment(img2, gt2, pos2, ign2, legend=False), img2)
    out2 = draw_anchor_assignment(img2, gt2, pos2, ign2)
    extra = changed(out2, img2) & ~boxes_only
    ys, xs = np.nonzero(extra)
    assert ys.min() == 0 and xs.min() == 0 and ys.max() < 100 and xs.max() < 250
    assert np.all(changed(out2, img2)[boxes_only])
    out3 = draw_anchor_assignment(img2, gt2, pos2)  # no ignored anchors: 2 lines
    assert np.nonzero(changed(out3, img2)[:140])[0].max() < ys.max()


def test_pr_plots(tmp_path):
    # interpolation: recall [.5, 1] precision [1, .5] -> 1 up to t = .5, then .5
    p = interpolated_precision([0.5, 1.0], [1.0, 0.5])
    assert p.shape == (101,) and p[50] == 1.0 and p[51] == 0.5 and p[100] == 0.5
    assert curve_ap([0.5, 1.0], [1.0, 0.5]) == pytest.approx((51 * 1.0 + 50 * 0.5) / 101)
    assert curve_ap([], []) == 0.0
    rng = np.random.default_rng(0)
    curves = {}
    for i in range(25):
        r = np.sort(rng.random(30))
        curves[f"class{i}"] = (r, np.clip(1 - r * rng.random(), 0, 1))
    few = {k: curves[k] for k in list(curves)[:4]}
    for name, c in (("few.png", few), ("many.png", curves)):
        out = plot_pr_curves(c, tmp_path / "sub" / name, "test")
        im = cv2.imread(str(out))
        assert im is not None and im.shape[0] > 100 and im.std() > 0
    out = plot_pr_curves({}, tmp_path / "empty.png", "nothing")
    assert cv2.imread(str(out)) is not None
    out = plot_pr_curves(few, tmp_path / "ap.png", "with ap", ap={"class0": 0.5},
                         mean_curve=(np.linspace(0, 1, 101), np.ones(101)))
    assert out.is_file()
