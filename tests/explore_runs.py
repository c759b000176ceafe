"""Two hand-made runs on the test images (tests/assets) whose TIDE errors are known by construction.

Run A copies every non-crowd ground-truth box exactly (a true positive, score in [0.5, 0.99]) except the objects in
``A_MISSED`` (Miss), and adds one error of each other TIDE type, placed so that exactly one test of
:mod:`evaluation.tide` holds for it (the IoUs are worked out beside each):

* ``Bkg``  on 333956: a box in the empty top right corner (IoU 0 with every gt);
* ``Dupe`` on 223747: the cat's box moved by (4, 3) px, scored below the cat's true positive (IoU 0.96 with it);
* ``Cls``  on 404484: the dog's box labelled cat (IoU 1 with the dog, no cat in the image);
* ``Loc``  on 454661: a car box moved right by 90 px (IoU 0.25 and 0.24 with two cars: in [0.1, 0.5]);
* ``Both`` on 223747: the person's box moved right by half its width, labelled dog (IoU 0.33 with the person,
  0.25 with the bed, 0.11 with the cat: no dog in the image, none >= 0.5, one > 0.1).

Run B is A without the Bkg box, finding three of A's four misses on 360960 but missing its umbrella, and missing
three more objects on 184324: B fixes 3 and breaks 1 object on 360960 (errors 4 -> 2), breaks 3 on 184324.
"""
from __future__ import annotations

import copy

ERRORS_A = {"Cls": 1, "Loc": 1, "Both": 1, "Dupe": 1, "Bkg": 1}
A_MISSED = {360960: [521861, 548188, 1722094, 2007641], 5001: [1263773, 1269467, 1310395], 184324: [142545, 1786625],
            454661: [2057288]}  # annotation ids A does not detect
MISS_A = {image: len(ids) for image, ids in A_MISSED.items()}  # 360960 4, 5001 3, 184324 2, 454661 1, others 0
B_FOUND = [521861, 548188, 1722094]  # of A's misses on 360960
B_MISSED = [281295, 1236007, 1261176, 1262862]  # 360960's umbrella; three persons on 184324
FIXED_B = {360960: 3}
BROKEN_B = {360960: 1, 184324: 3}
DIFF_B = {360960: -2, 184324: 3, 333956: -1}  # B's errors - A's at any threshold <= 0.5


def _tp_score(ann_id: int) -> float:
    return 0.5 + (ann_id * 37 % 50) / 100  # 0.5 ... 0.99, spread over the objects


def make_runs(gt: dict) -> tuple[list[dict], list[dict]]:
    """(run A, run B) as COCO results lists on ``gt`` (tests/assets/annotations/instances_val2017.json)."""
    missed_a = {i for ids in A_MISSED.values() for i in ids}
    anns = {a["id"]: a for a in gt["annotations"]}
    a_run, b_run = [], []
    for a in gt["annotations"]:
        if a.get("iscrowd", 0):
            continue
        det = {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]),
               "score": 0.95 if a["id"] in (49884, 7981) else _tp_score(a["id"])}
        if a["id"] not in missed_a:
            a_run.append(det)
        if (a["id"] not in missed_a or a["id"] in B_FOUND) and a["id"] not in B_MISSED:
            b_run.append(copy.deepcopy(det))

    def moved(ann_id, dx, dy, **kw):
        x, y, w, h = anns[ann_id]["bbox"]
        return {"image_id": anns[ann_id]["image_id"], "category_id": anns[ann_id]["category_id"],
                "bbox": [x + dx, y + dy, w, h], **kw}

    errors = [
        moved(49884, 4, 3, score=0.6),  # Dupe of the cat (its true positive scores 0.95)
        moved(7981, 0, 0, category_id=17, score=0.7),  # Cls: the dog called a cat
        moved(136684, 90, 0, score=0.65),  # Loc: a car, 90 px off
        moved(442965, 94, 0, category_id=18, score=0.55),  # Both: the person's box, half off, called a dog
    ]
    bkg = {"image_id": 333956, "category_id": 15, "bbox": [300.0, 20.0, 80.0, 80.0], "score": 0.9}
    return a_run + errors + [bkg], b_run + copy.deepcopy(errors)
