"""models/anchors.py: anchors from sizes x aspect ratios, or explicit (w, h) priors."""
from __future__ import annotations

from models.anchors import AnchorGenerator


def test_custom_wh_anchors_replace_sizes_times_ratios():
    gen = AnchorGenerator(32, (32, 64), (0.5, 1.0), custom_wh=((10, 20), (30, 40)))
    assert gen.num_anchors == 2
    assert gen(1, 2).tolist() == [[-5, -10, 5, 10], [-15, -20, 15, 20], [27, -10, 37, 10], [17, -20, 47, 20]]
