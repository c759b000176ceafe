"""Synthetic images of varied shapes: batches that need padding, and the image mask that then has work to do."""
from __future__ import annotations

import json

import torch

from config import load_config
from models.assigner import anchor_valid_mask
from tests.conftest import REPO
from utils.image_list import padded_size
from tools.padding_stats import measure

# 128-px images: at stride 32 an image side of 64 in a 128-px batch leaves 2 of 4 anchor rows in padding
TINY = {"data.synthetic.num_train": 16, "data.synthetic.num_val": 4, "data.train_min_size": [128],
        "data.train_max_size": 128, "data.test_min_size": 128, "data.test_max_size": 128, "solver.batch_size": 4,
        "solver.reference_batch_size": 4, "data.num_workers": 0, "data.synthetic.min_box": 8,
        "model.backbone.width_mult": 0.25, "model.encoder.channels": 32, "model.encoder.mid_channels": 8}


def _cfg(tmp_path, **extra):
    return load_config(REPO / "config/small_cpu.yaml", {**TINY, "data.root": str(tmp_path / "synth"), **extra})


def test_varied_shapes_are_drawn_per_image_within_the_range_and_aspect(tmp_path):
    from config.schema import SyntheticConfig
    from data.synthetic.generate import generate_synthetic_coco

    cfg = SyntheticConfig(num_train=30, num_val=4, size_range=(40, 90), max_aspect=1.5, min_box=8.0)
    root = generate_synthetic_coco(tmp_path / "v", cfg, workers=0)
    images = json.loads((root / "annotations" / "instances_train.json").read_text())["images"]
    sizes = {(im["height"], im["width"]) for im in images}
    assert len(sizes) > 20  # drawn per image, not one shape
    assert all(40 <= h <= 90 and 40 <= w <= 90 and max(h, w) <= 1.5 * min(h, w) for h, w in sizes)
    import cv2

    first = cv2.imread(str(root / "train" / images[0]["file_name"]))
    assert first.shape[:2] == (images[0]["height"], images[0]["width"])


def test_fixed_size_batches_have_no_padding_and_varied_ones_do(tmp_path):
    fixed = measure(_cfg(tmp_path / "f", **{"data.synthetic.image_size": [128, 128]}), batches=2)
    assert fixed["pad_pixels"]["max"] == 0.0 and fixed["masked_anchors"]["max"] == 0.0
    varied = measure(_cfg(tmp_path / "v", **{"data.synthetic.size_range": [64, 192]}), batches=3)
    assert varied["batches"] == 3
    assert varied["pad_pixels"]["mean"] > 0.05 and varied["masked_anchors"]["mean"] > 0.0


def test_image_mask_ignores_the_anchors_centred_in_padding_of_a_varied_batch(tmp_path):
    from data.build import build_dataset, build_train_loader
    from models import build_model

    cfg = _cfg(tmp_path, **{"data.synthetic.size_range": [64, 192], "model.loss.image_mask": True})
    dataset = build_dataset(cfg, "train", is_train=True)
    loader, _ = build_train_loader(cfg, dataset, 4, 0, 1)
    images, targets = next(iter(loader))
    sizes = [tuple(im.shape[-2:]) for im in images]
    assert len(set(sizes)) > 1  # the resize leaves different shapes: the batch is padded
    model = build_model(cfg).eval()
    with torch.no_grad():
        batch, image_sizes = model.preprocess(images)
        _, deltas, anchors = model.forward_features(batch)
    assert tuple(batch.shape[-2:]) == padded_size(sizes, model.size_divisibility)
    pred = model.box_coder.decode(deltas, anchors)
    valid = anchor_valid_mask(anchors, image_sizes)
    assert (~valid).any()
    masked = model.assign(pred, anchors, targets, image_sizes=image_sizes)
    assert (masked.labels[~valid] == -1).all()  # every anchor centred in padding is ignored
    img, src, _ = masked.kept_pairs()
    assert valid[img, src].all()  # and no kept box pair sits on one
    model.assigner.image_mask = False  # the official default: those anchors are trained as background
    plain = model.assign(pred, anchors, targets, image_sizes=image_sizes)
    assert (plain.labels[~valid] == model.num_classes).any()
