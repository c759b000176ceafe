"""data/synthetic/render.py: one image, boxes tight to what is visible, every class drawn, deterministic."""
from __future__ import annotations

import numpy as np

from config.schema import SyntheticConfig
from data.synthetic.render import ObjectSizes, RenderRules, render_sample
from data.synthetic.shapes import SHAPE_CLASSES

DEFAULT = SyntheticConfig()
RANGES = ObjectSizes(DEFAULT.num_objects, DEFAULT.min_box)  # data.synthetic's defaults: 1-6 objects of 16 px and up


def _iou_matrix(b: np.ndarray) -> np.ndarray:
    x0 = np.maximum(b[:, None, 0], b[None, :, 0])
    y0 = np.maximum(b[:, None, 1], b[None, :, 1])
    x1 = np.minimum(b[:, None, 2], b[None, :, 2])
    y1 = np.minimum(b[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area[:, None] + area[None, :] - inter)


def test_render_sample_deterministic():
    a = render_sample(np.random.default_rng(7), DEFAULT.image_size, RANGES)
    b = render_sample(np.random.default_rng(7), DEFAULT.image_size, RANGES)
    c = render_sample(np.random.default_rng(8), DEFAULT.image_size, RANGES)
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
        img, boxes, labels = render_sample(rng, (128, 128), ObjectSizes((1, 1), DEFAULT.min_box),
                                           RenderRules(backgrounds=("flat",), clutter_prob=0.0, noise_prob=0.0))
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
        img, boxes, labels = render_sample(np.random.default_rng(1000 + seed), (h, w), RANGES)
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
        img, boxes, labels = render_sample(np.random.default_rng(seed), (48, 64), ObjectSizes((1, 3), 8.0, 30.0))
        assert img.shape == (48, 64, 3)
        if len(boxes):
            assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 64).all() and (boxes[:, 3] <= 48).all()
