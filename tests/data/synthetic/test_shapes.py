"""data/synthetic/shapes.py: the polygon helpers on cases computed by hand, and each class's shape."""
from __future__ import annotations

import numpy as np
import pytest

from data.synthetic.shapes import SHAPE_CLASSES, clip_polygon, inset_polygon, make_shape, polygon_area

SQUARE = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]])


def test_area_clip_and_inset_of_a_square():
    assert polygon_area(SQUARE) == 100.0 and polygon_area(SQUARE[:2]) == 0.0
    clipped = clip_polygon(SQUARE - 5.0, 10.0, 10.0)  # its quarter [0, 5] x [0, 5] lies inside
    assert polygon_area(clipped) == pytest.approx(25.0)
    assert clipped.min(0).tolist() == [0.0, 0.0] and clipped.max(0).tolist() == [5.0, 5.0]
    inner = inset_polygon(SQUARE, 1.0)  # each edge 1 px inwards: [1, 9] x [1, 9], either orientation
    assert sorted(map(tuple, np.round(inner, 9))) == [(1, 1), (1, 9), (9, 1), (9, 9)]
    assert sorted(map(tuple, np.round(inset_polygon(SQUARE[::-1], 1.0), 9))) == [(1, 1), (1, 9), (9, 1), (9, 9)]


@pytest.mark.parametrize("label", range(len(SHAPE_CLASSES)), ids=SHAPE_CLASSES)
def test_a_given_extent_is_the_shapes_box_and_only_outlines_have_a_stroke(label):
    poly, stroke = make_shape(np.random.default_rng(label), label, 0.0, wh=(40.0, 20.0))
    np.testing.assert_allclose(poly.max(0) - poly.min(0), [40.0, 20.0], rtol=1e-9)
    assert (stroke > 0) == SHAPE_CLASSES[label].startswith("outlined_")
    if stroke:
        assert polygon_area(inset_polygon(poly, stroke)) < polygon_area(poly)
