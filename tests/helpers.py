"""Small models, batches and runs shared by the tests (each test file imports what it needs from here)."""
from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import cv2
import torch

from config import load_config
from data.coco import COCODetection
from data.transforms import Compose
from models.detector import YOLOF
from tests.conftest import COCO_SPLIT, REPO

CPU = torch.device("cpu")

# Per-sample normalisation (GroupNorm) and frozen BN in the backbone, so that a batch splits exactly over
# processes and accumulation steps; SGD, whose update is linear in the gradient (Adam's first step is about
# sign(g) and amplifies float noise where g ~ 0).
TINY = {"solver.optimizer": "sgd", "model.backbone.norm": "frozen_bn", "model.backbone.width_mult": 0.25,
        "model.encoder.norm": "gn", "model.decoder.norm": "gn", "model.encoder.channels": 32,
        "model.encoder.mid_channels": 8}

# a quickstart run at test size: 64 synthetic 64-px images, a narrow model, 20 steps of batch 4
SMALL = ["model.backbone.width_mult=0.25", "model.encoder.channels=32", "model.encoder.mid_channels=8",
         "data.synthetic.num_train=64", "data.synthetic.num_val=8", "data.synthetic.image_size=[64, 64]",
         "data.train_min_size=[64]", "data.train_max_size=64", "data.test_min_size=64", "data.test_max_size=64",
         "solver.batch_size=4", "solver.reference_batch_size=4", "solver.warmup_iters=5", "train.log_period=1",
         "solver.max_iter=20", "solver.steps=[15]"]


def tiny_cfg(**extra):
    return load_config(REPO / "config/small_cpu.yaml", {**TINY, **extra})


def small_cfg(tmp_path: Path, *opts: str):
    """The SMALL run on synthetic data generated under ``tmp_path/data`` (once per folder)."""
    return load_config(REPO / "config/small_cpu.yaml", [f"data.root={tmp_path / 'data'}", *SMALL, *opts])


def synthetic_cfg(tmp_path: Path, **extra):
    """TINY on 24 synthetic 96-px images, batch 4: 6 steps an epoch."""
    return load_config(REPO / "config/small_cpu.yaml", {
        **TINY, "data.root": str(tmp_path / "synth"), "data.synthetic.num_train": 24, "data.synthetic.num_val": 4,
        "data.synthetic.image_size": [96, 96], "data.train_min_size": [96], "data.train_max_size": 96,
        "data.test_min_size": 96, "data.test_max_size": 96, "solver.batch_size": 4, "solver.reference_batch_size": 4,
        "solver.warmup_iters": 2, "data.num_workers": 0, **extra})


def batch(n: int, seed: int = 0):
    """``n`` random images (64 or 80 x 96, 0-255) with two boxes of classes 0..4 each."""
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, 64 + 16 * (i % 2), 96, generator=g) * 255 for i in range(n)]
    targets = []
    for _ in range(n):
        xy = torch.rand(2, 2, generator=g) * 40
        wh = 10 + torch.rand(2, 2, generator=g) * 30
        targets.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(0, 5, (2,), generator=g)})
    return images, targets


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def records(out: Path) -> list[dict]:
    """Every record of ``out/metrics.jsonl``."""
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def poison_losses(monkeypatch, calls, value: float = float("nan")):
    """Multiply the loss of the listed forward calls (1-based; "all": every call) by ``value`` (nan or inf);
    returns the call counter."""
    real, count = YOLOF.compute_losses, [0]

    def poisoned(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        count[0] += 1
        if calls == "all" or count[0] in calls:
            out = {**out, "loss_sum": out["loss_sum"] * value, "loss_cls": out["loss_cls"] * value}
        return out

    monkeypatch.setattr(YOLOF, "compute_losses", poisoned)
    return count


def coco_with_a_broken_image(coco_tiny: Path, tmp_path: Path, name: str, junk: bytes = b"not a JPEG"):
    """A copy of tests/assets whose image ``name`` holds ``junk`` bytes: (its root, its dataset, the annotation of
    each readable image keyed by its decoded pixels, for a model that answers an image with its own boxes)."""
    root = tmp_path / "coco"
    shutil.copytree(coco_tiny, root)
    (root / COCO_SPLIT / name).write_bytes(junk)
    ds = COCODetection(root / COCO_SPLIT, root / "annotations" / f"instances_{COCO_SPLIT}.json", Compose([]),
                       filter_empty=False)
    truth = {}
    for i in range(len(ds)):
        image = cv2.imread(ds.get_file_name(i), cv2.IMREAD_COLOR)
        if image is not None:
            truth[image.tobytes()] = ds.get_annotation(i)
    return root, ds, truth
