"""data/synthetic/scenes.py: scenes drawn from COCO's table fit their images and follow the table."""
from __future__ import annotations

import numpy as np

from data.synthetic.scenes import COCO_STATS, draw_image_size, draw_scene


def test_drawn_scenes_follow_the_table_and_fit_the_image():
    rng = np.random.default_rng(0)
    stats = COCO_STATS
    fits = []
    for _ in range(300):
        (h, w), boxes = draw_scene(rng, stats)
        assert max(h, w) == stats.long_side and any(abs(w / h - a) < 0.01 for a in stats.image_aspects)
        assert stats.objects.edges[0] <= len(boxes) < stats.objects.edges[-1]
        wh = np.array(boxes)
        assert (wh >= stats.min_side).all()
        assert (np.diff(wh.prod(axis=1)) <= 0).all()  # largest first
        fits += ((wh[:, 0] <= w) & (wh[:, 1] <= h)).tolist()
    assert np.mean(fits) > 0.999  # a large box redraws its shape until it fits (the rest are scaled when drawn)


def test_drawn_image_sizes_stay_in_the_range_and_aspect():
    rng = np.random.default_rng(0)
    sizes = {draw_image_size(rng, (40, 90), 1.5) for _ in range(200)}
    assert len(sizes) > 100 and all(40 <= h <= 90 and 40 <= w <= 90 and max(h, w) <= 1.5 * min(h, w) for h, w in sizes)
