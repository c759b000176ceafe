"""A COCO-format dataset of one's own, with no code: model.num_classes=auto, three --opts, train, evaluate."""
from __future__ import annotations

import json

import cv2
import numpy as np
import torch

from config import load_config
from tests.conftest import REPO

# three categories with non-contiguous ids, listed out of order: labels follow the sorted ids (2, 5, 9)
CATEGORIES = [{"id": 9, "name": "boat"}, {"id": 2, "name": "apple"}, {"id": 5, "name": "kite"}]
COLORS = {2: (0, 0, 255), 5: (0, 255, 0), 9: (255, 0, 0)}  # BGR


def _write_split(root, split, n, rng):
    (root / split).mkdir(parents=True)
    images, annotations = [], []
    for i in range(n):
        image = np.full((64, 64, 3), 127, np.uint8)
        for k, cid in enumerate(rng.permutation([2, 5, 9])[: 1 + i % 3]):
            x, y = int(rng.integers(0, 36)), int(rng.integers(0, 36))
            w, h = int(rng.integers(14, 28)), int(rng.integers(14, 28))
            cv2.rectangle(image, (x, y), (min(63, x + w), min(63, y + h)), COLORS[int(cid)], -1)
            annotations.append({"id": len(annotations) + 1, "image_id": 100 + i, "category_id": int(cid),
                                "bbox": [x, y, min(63, x + w) - x, min(63, y + h) - y], "area": w * h, "iscrowd": 0})
        cv2.imwrite(str(root / split / f"{i:04d}.jpg"), image)
        images.append({"id": 100 + i, "file_name": f"{i:04d}.jpg", "height": 64, "width": 64})
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / f"instances_{split}.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))


def test_num_classes_auto_trains_evaluates_and_names_the_classes(tmp_path, capsys):
    import eval as eval_script
    from engine.trainer import RunOptions, fit

    rng = np.random.default_rng(0)
    root = tmp_path / "my_data"
    _write_split(root, "train", 8, rng)
    _write_split(root, "val", 3, rng)
    torch.set_num_threads(1)
    # the README's three --opts, and a tiny model and schedule
    cfg = load_config(REPO / "config/small_cpu.yaml", [
        "data.dataset=coco", f"data.root={root}", "model.num_classes=auto",
        "model.backbone.width_mult=0.25", "model.encoder.channels=32", "model.encoder.mid_channels=8",
        "data.train_min_size=[64]", "data.train_max_size=64", "data.test_min_size=64", "data.test_max_size=64",
        "solver.batch_size=4", "solver.reference_batch_size=4", "solver.warmup_iters=1"])
    assert cfg.model.num_classes == "auto"
    record = fit(cfg, RunOptions(tmp_path / "run", device=torch.device("cpu"), max_iter=3, progress=False))
    assert record["iteration"] == 3 and "AP50" in record

    ckpt = torch.load(tmp_path / "run" / "last.pth", map_location="cpu", weights_only=True)
    assert ckpt["class_names"] == ["apple", "kite", "boat"]
    assert ckpt["config"]["model"]["num_classes"] == 3  # what eval.py / test.py build the model from
    num_anchors = len(cfg.model.anchors.sizes) * len(cfg.model.anchors.aspect_ratios)
    assert ckpt["model"]["decoder.cls_score.weight"].shape[0] == 3 * num_anchors
    assert "num_classes: auto" in (tmp_path / "run" / "config.yaml").read_text()  # the run's config as given

    capsys.readouterr()
    metrics = eval_script.main(["--weight", str(tmp_path / "run" / "last.pth"), "--split", "val",
                                "--out", str(tmp_path / "metrics.json")])
    table = capsys.readouterr().err
    rows = [line.split()[0] for line in table.splitlines() if line.split()[:1] in (["apple"], ["kite"], ["boat"])]
    assert rows == ["apple", "kite", "boat"]  # the per-class table, in label order
    per_class = json.loads((tmp_path / "metrics.json").read_text())["per_class"]
    assert list(per_class) == ["apple", "kite", "boat"] and "AP50" in metrics
