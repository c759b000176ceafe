"""The training checks: AMP parity and throughput of YOLOF-R50-C5, its FLOPs and MFU, and the Trainer itself on a
COCO-layout set with DataLoader workers."""
from __future__ import annotations

import contextlib
import copy
import json
import math
import shutil
import time
from pathlib import Path
from typing import Optional

import torch

from config import load_config
from engine.optim import build_optimizer
from engine.step import train_step
from engine.trainer import RunOptions, Trainer
from models import build_model
from utils.paths import REPO_ROOT

PRECISIONS = {"fp32": "none", "fp16": "fp16", "bf16": "bf16"}
LR = 1e-4  # small steps from random weights: the precisions' rounding stays the only difference
ASSETS = REPO_ROOT / "tests" / "assets"  # 7 real COCO val2017 images with their annotations


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def true_fp32(device: torch.device):
    """fp32 as written: no TF32 in cuDNN convolutions and cuBLAS matmuls (torch allows it in convolutions by
    default), so that the fp32 reference is not itself rounded to 10 mantissa bits."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


# Labels that do not depend on the predictions: the uniform matcher ranks anchors by the L1 distance of their
# predicted boxes and the ignore thresholds read the predicted boxes' IoU, so on random weights a rounding can
# flip a positive and move the loss by several percent; IoU top-k on the anchors alone keeps the loss a smooth
# function of the network's outputs, which is what a precision comparison measures.
FIXED_LABELS = {"model.matcher.name": "iou_topk", "model.matcher.ignore_thresholds": False}


def r50(device: torch.device, seed: int = 0, overrides: Optional[dict] = None):
    """YOLOF-R50-C5 with seeded random weights (frozen-BN backbone, frozen stem and stage 1 as in the recipe)."""
    cfg = load_config(REPO_ROOT / "config/yolof_r50_c5_1x.yaml", {"model.backbone.weights": "none",
                                                                     **(overrides or {})})
    torch.manual_seed(seed)
    return build_model(cfg).to(device), cfg


def batch(n: int, size: tuple[int, int], device: torch.device, seed: int = 0):
    """``n`` random images of ``size`` (0-255) with 4 boxes each, on ``device``."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    images = [(torch.rand(3, h, w, generator=g) * 255).to(device) for _ in range(n)]
    targets = []
    for _ in range(n):
        xy = torch.rand(4, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        wh = 16 + torch.rand(4, 2, generator=g) * torch.tensor([w * 0.35, h * 0.35])
        targets.append({"boxes": torch.cat([xy, xy + wh], 1).to(device),
                        "labels": torch.randint(0, 80, (4,), generator=g).to(device)})
    return images, targets


def first_step_losses(device, size, n, precisions, seed: int = 0) -> dict[str, float]:
    """The loss of the first training step of the same weights on the same images in each precision, labels fixed
    (:data:`FIXED_LABELS`)."""
    base, cfg = r50(device, seed, FIXED_LABELS)
    images, targets = batch(n, size, device, seed)
    out = {}
    for name in precisions:
        model = copy.deepcopy(base).train()
        opt = build_optimizer(model, cfg.solver, LR)
        scaler = torch.amp.GradScaler(device.type, init_scale=1024.0) if name == "fp16" else None
        with true_fp32(device):
            out[name] = train_step(model, opt, [(images, targets)], device=device, scaler=scaler,
                                   amp=PRECISIONS[name])["loss"]
        del model, opt
    return out


def throughput(device, size, n, name: str, steps: int) -> dict:
    """Training images/s of ``name`` over ``steps`` steps after a warm-up step, and the peak memory (CUDA)."""
    model, cfg = r50(device)
    model.train()
    images, targets = batch(n, size, device)
    opt = build_optimizer(model, cfg.solver, LR)
    scaler = torch.amp.GradScaler(device.type, init_scale=1024.0) if name == "fp16" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with true_fp32(device) if name == "fp32" else contextlib.nullcontext():
        train_step(model, opt, [(images, targets)], device=device, scaler=scaler, amp=PRECISIONS[name])
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            train_step(model, opt, [(images, targets)], device=device, scaler=scaler, amp=PRECISIONS[name])
        sync(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return {"images_per_s": n * steps / seconds, "peak_mib": peak}


def train_flops_per_image(device, size) -> float:
    """FLOPs of one training step's forward and backward for one image (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode  # heavy: the FLOP count only

    model, _ = r50(device)
    model.train()
    images, targets = batch(1, size, device)
    with FlopCounterMode(display=False) as counter:
        out = model(images, targets, reduce_over_ranks=False)
        out["loss_sum"].backward()
    return float(counter.get_total_flops())


def coco_layout_set(root: Path, train_images: int) -> Path:
    """A COCO-layout root under ``root``: ``val2017`` = tests/assets, ``train_check`` = its images repeated to
    ``train_images`` (links, not copies), with their annotations under new ids."""
    data = json.loads((ASSETS / "annotations" / "instances_val2017.json").read_text())
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    train_dir, val_dir = root / "train_check", root / "val2017"
    train_dir.mkdir(exist_ok=True)
    if not val_dir.exists():
        shutil.copytree(ASSETS / "val2017", val_dir)
    shutil.copy(ASSETS / "annotations" / "instances_val2017.json", root / "annotations" / "instances_val2017.json")
    images, annotations = [], []
    for k in range(train_images):
        src = data["images"][k % len(data["images"])]
        name = f"{k:06d}_{src['file_name']}"
        target = train_dir / name
        if not target.exists():
            try:
                target.hardlink_to(val_dir / src["file_name"])
            except OSError:
                shutil.copy(val_dir / src["file_name"], target)
        images.append({**src, "id": k + 1, "file_name": name})
        annotations += [{**a, "id": len(annotations) + i + 1, "image_id": k + 1}
                        for i, a in enumerate(x for x in data["annotations"] if x["image_id"] == src["id"])]
    (root / "annotations" / "instances_train_check.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": data["categories"]}))
    return root


def trainer_run(device, root: Path, *, size: tuple[int, int], batch_size: int, iters: int, workers: int,
                amp: str) -> dict:
    """The Trainer for ``iters`` iterations of the R50-C5 recipe on a COCO-layout set under ``amp``, with
    ``workers`` DataLoader workers (pinned memory on CUDA), and one evaluation at the end."""
    data = coco_layout_set(root / "coco", max(4 * batch_size, 64))
    cfg = load_config(REPO_ROOT / "config/yolof_r50_c5_1x.yaml", {
        "model.backbone.weights": "none", "data.root": str(data), "data.train_split": "train_check",
        "data.val_split": "val2017", "data.num_workers": workers, "data.train_min_size": [size[0]],
        "data.train_max_size": size[1], "data.test_min_size": size[0], "data.test_max_size": size[1],
        "solver.batch_size": batch_size, "solver.amp": amp, "train.eval_period": 0,
        "train.log_period": max(1, iters // 10)})
    trainer = Trainer(cfg, RunOptions(root / "run", device=device, max_iter=iters, progress=False, argv=[]))
    evaluate, spent = trainer.validator.evaluate, {"eval": 0.0}

    def timed_evaluate(final):
        t = time.perf_counter()
        try:
            return evaluate(final)
        finally:
            spent["eval"] += time.perf_counter() - t

    trainer.validator.evaluate = timed_evaluate
    t0 = time.perf_counter()
    record = trainer.run()
    total = time.perf_counter() - t0
    losses = [r["loss"] for r in map(json.loads, (root / "run" / "metrics.jsonl").read_text().splitlines())
              if r.get("type") == "iter"]
    train_s = total - spent["eval"]
    return {"iterations": record.get("iteration"), "finite": bool(losses) and all(map(math.isfinite, losses)),
            "rollbacks": record.get("nan_rollbacks", 0), "skipped": record.get("skipped_steps", 0),
            "images_per_s": iters * batch_size / train_s, "data_wait_share": trainer.progress.data_wait_s / train_s,
            "eval_s": spent["eval"], "AP50": record.get("AP50"), "pinned": trainer.data.loader.pin_memory,
            "workers": trainer.data.loader.num_workers}
