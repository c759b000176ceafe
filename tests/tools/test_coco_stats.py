"""tools/coco_stats.py: the statistics of COCO annotation files, measured by hand, and the literal it prints is the
table data/synthetic/scenes.py holds."""
from __future__ import annotations

import json

from data.synthetic.scenes import COCO_STATS
from tests.conftest import REPO
from tools.coco_stats import format_table, load_scenes, measure, size_split



def test_coco_stats_tool_measures_by_hand(tmp_path):
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


def test_the_printed_literal_is_the_committed_table():
    assert format_table(COCO_STATS) in (REPO / "data" / "synthetic" / "scenes.py").read_text()
