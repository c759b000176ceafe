"""data/mixup.py: two training images blended, both box sets kept, the draws from the sample's own generator."""
from __future__ import annotations

import numpy as np

from data.mixup import Mixup, mix_samples


def _sample(value, h, w, boxes, labels):
    return (np.full((h, w, 3), value, dtype=np.uint8),
            {"boxes": np.asarray(boxes, dtype=np.float64).reshape(-1, 4), "labels": np.asarray(labels, dtype=np.int64),
             "image_id": value, "crowd_boxes": np.zeros((0, 4))})


def test_mixup_blends_pixels_and_keeps_both_box_sets():
    a = _sample(200, 4, 6, [[0, 0, 2, 2]], [1])
    b = _sample(50, 4, 6, [[1, 1, 5, 3], [2, 0, 4, 4]], [0, 3])
    image, target = mix_samples(a, b, 0.3)
    np.testing.assert_allclose(image, np.full((4, 6, 3), 0.3 * 200 + 0.7 * 50), rtol=1e-6)
    assert target["boxes"].tolist() == [[0, 0, 2, 2], [1, 1, 5, 3], [2, 0, 4, 4]]
    assert target["labels"].tolist() == [1, 0, 3] and target["image_id"] == 200
    # b larger than a: cut to a's canvas, its boxes clipped, the one left outside dropped
    b = _sample(50, 8, 8, [[1, 1, 7, 7], [6.5, 5, 8, 8]], [0, 3])
    image, target = mix_samples(a, b, 0.5)
    assert image.shape == (4, 6, 3) and np.all(image == 125.0)
    assert target["boxes"].tolist() == [[0, 0, 2, 2], [1, 1, 6, 4]] and target["labels"].tolist() == [1, 0]
    # b smaller than a: outside b the image is lam * a
    image, _ = mix_samples(a, _sample(50, 2, 3, [], []), 0.5)
    assert image[0, 0, 0] == 125.0 and image[3, 5, 0] == 100.0


def test_mixup_draws_from_the_sample_rng():
    """Mixup is a multi-image step: its draws (and its partner's augmentation) come from the sample's rng."""
    toy = [_sample(10 * (i + 1), 4, 4, [[i, i, i + 1, i + 1]], [i % 2]) for i in range(4)]  # raw samples
    mix = Mixup(lambda image, target, rng: (image, target), toy, prob=1.0, alpha=0.0)  # alpha <= 0: lam = 0.5
    image, target = mix(*toy[0], np.random.default_rng(7))
    j = int(target["boxes"][1, 0])  # the second box is the partner's: [j, j, j+1, j+1]
    assert np.all(image == 0.5 * 10 + 0.5 * 10 * (j + 1)) and len(target["boxes"]) == 2
    again, _ = mix(*toy[0], np.random.default_rng(7))
    assert np.array_equal(image, again)
    plain = Mixup(lambda image, target, rng: (image, target), toy, prob=0.0)
    assert plain(*toy[1], np.random.default_rng(7))[0].dtype == np.uint8 and len(plain(*toy[1], None)[1]["boxes"]) == 1
