"""Slow end-to-end check: YOLOF from scratch overfits a handful of real COCO images.

The bar: after training on 4 of the real COCO images of tests/assets (no augmentation), COCO AP50 on
those same images, computed by pycocotools, is at least 0.5.
"""
from __future__ import annotations

import json

import pytest
import torch

from config import load_config
from models import build_model
from tests.conftest import COCO_SPLIT, REPO
from engine.optim import build_optimizer
from engine.step import train_step

NUM_IMAGES = 4
STEPS = 200


@pytest.mark.slow
def test_overfit_four_coco_images(coco_tiny, tmp_path):
    from data.build import build_dataset
    from models.fuse import prepare_for_inference
    from evaluation.coco_eval import evaluate_coco

    cfg = load_config(REPO / "config/small_cpu.yaml", {
        "model.num_classes": 80, "data.dataset": "coco", "data.root": str(coco_tiny), "solver.optimizer": "sgd",
        "model.backbone.width_mult": 0.5,
        "data.train_min_size": [256], "data.train_max_size": 384, "data.test_min_size": 256, "data.test_max_size": 384,
        "data.random_shift": False, "data.flip_prob": 0.0, "model.test.score_thresh": 0.05})
    train = build_dataset(cfg, COCO_SPLIT, is_train=True)
    # the first images with at most 8 boxes: a handful of objects to memorise
    picked = [i for i in range(len(train)) if len(train.get_annotation(i)["boxes"]) <= 8][:NUM_IMAGES]
    batch = [train[i] for i in picked]
    images, targets = [b[0] for b in batch], [b[1] for b in batch]
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = build_optimizer(model, cfg.solver, 0.02)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda it: min(1.0, (it + 1) / 30) * (0.1 if it > 0.8 * STEPS else 1.0))
    for _ in range(STEPS):
        logs = train_step(model, opt, [(images, targets)], device=torch.device("cpu"), clip_grad_norm=10.0)
        sched.step()
    model = prepare_for_inference(model)
    with torch.no_grad():
        outs = model(images, output_sizes=[tuple(t["orig_size"].tolist()) for t in targets])
    dets = []
    for t, o in zip(targets, outs):
        for (x1, y1, x2, y2), s, l in zip(o["boxes"].tolist(), o["scores"].tolist(), o["labels"].tolist()):
            dets.append({"image_id": int(t["image_id"]), "category_id": train.label_to_cat_id[l],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
    # ground truth restricted to the picked images
    gt = json.loads(open(train.ann_file).read())
    ids = {int(t["image_id"]) for t in targets}
    gt["images"] = [im for im in gt["images"] if im["id"] in ids]
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in ids]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    result = evaluate_coco(str(tmp_path / "gt.json"), dets)
    print(f"overfit: final loss {logs['loss']:.3f}, AP50 {result.stats['AP50']:.3f}, AP {result.stats['AP']:.3f}")
    assert result.stats["AP50"] >= 0.5, result.stats
