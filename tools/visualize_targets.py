"""Which anchors become positive (and ignored) for augmented training images: ``train.py --vis_targets``.

    python -m tools.visualize_targets --config config/yolof_r50_c5_1x.yaml --output_dir runs/vis [--num 8]
    python -m tools.visualize_targets --config config/quickstart.yaml --opts model.matcher.name=grid_center
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

if __package__ in (None, ""):  # python tools/<name>.py: the repository root on sys.path (tools/_bootstrap.py)
    import _bootstrap  # noqa: F401

from cli import resolve_device, run_config
from config.loader import resolve_num_classes
from data.build import build_dataset
from models import build_model
from utils.checkpoint import load_model_weights
from utils.script import common_parser, run_script, setup_logging
from utils.visualize import draw_anchor_assignment

logger = logging.getLogger(__name__)


def image_to_bgr(image: torch.Tensor, input_format: str) -> np.ndarray:
    """(3, H, W) 0-255 tensor in ``input_format`` -> HWC uint8 BGR for OpenCV."""
    arr = image.detach().cpu().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return np.ascontiguousarray(arr[:, :, ::-1] if input_format == "RGB" else arr)


@torch.no_grad()
def assignment_for_batch(model, images, targets):
    """Per image: (positive anchor boxes (P, 4), their labels (P,), ignored anchor boxes (I, 4)), from the
    model's own label assignment (:meth:`models.detector.YOLOF.assign`) for its current predictions."""
    model.eval()
    batch, sizes = model.preprocess(images)
    _, deltas, anchors = model.forward_features(batch)
    pred_boxes = model.box_coder.decode(deltas, anchors)
    labels = model.assign(pred_boxes, anchors, targets, image_sizes=sizes).labels
    k = model.num_classes
    out = []
    for lab in labels:
        pos = (lab >= 0) & (lab < k)
        out.append((anchors[pos], lab[pos], anchors[lab < 0]))
    return out


def augmented_samples(dataset, num_images: int, seed: int):
    """``(n, image, target)`` of ``num_images`` distinct training images drawn with ``seed``, each augmented with
    its own generator (``seed + n``): the same samples for the same seed. Shared by ``--vis_targets`` and
    ``tools/browse_dataset.py``."""
    rng = np.random.default_rng(seed)
    indices = rng.choice(len(dataset), size=min(num_images, len(dataset)), replace=False)
    for n, idx in enumerate(indices.tolist()):
        dataset.set_rng(np.random.default_rng(seed + n))
        image, target = dataset[idx]
        yield n, image, target


def sample_path(out_dir: Path, n: int, target: dict) -> Path:
    """``out_dir/<n>_<image stem>.png``: where a drawn sample goes."""
    return out_dir / f"{n:02d}_{Path(target['file_name']).stem}.png"


def visualize_targets(cfg, out_dir: Path, num_images: int, device: torch.device, *,
                      weight: str | None = None) -> list[Path]:
    """Draw the anchor assignment of ``num_images`` augmented training images into ``out_dir``; their paths."""

    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = build_dataset(cfg, cfg.data.train_split, is_train=True)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg).to(device)
    if weight:
        load_model_weights(model, weight)
    paths = []
    for n, image, target in augmented_samples(dataset, num_images, cfg.train.seed):
        (pos, _, ignored), = assignment_for_batch(model, [image.to(device)], [
            {"boxes": target["boxes"].to(device), "labels": target["labels"].to(device)}])
        canvas = draw_anchor_assignment(image_to_bgr(image, cfg.model.input_format), target["boxes"].numpy(),
                                        pos.cpu().numpy(), ignored.cpu().numpy())
        path = sample_path(out_dir, n, target)
        cv2.imwrite(str(path), canvas)
        logger.info("%s: %d boxes, %d positive anchors, %d ignored", path.name, len(target["boxes"]), len(pos),
                    len(ignored))
        paths.append(path)
    return paths


def visualize_run(cfg, out_dir: Path, num_images: int, device: torch.device) -> list[Path]:
    """:func:`visualize_targets` for a run's config, with ``model.num_classes: auto`` resolved from the data."""

    if cfg.model.num_classes == "auto":
        cfg = resolve_num_classes(cfg, build_dataset(cfg, cfg.data.train_split, is_train=True).class_names)
    paths = visualize_targets(cfg, out_dir, num_images, device)
    logger.info("wrote %d pictures to %s", len(paths), out_dir)
    return paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[common_parser()], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", "-o", type=Path, default=Path("runs/vis_targets"), help="where the pictures go")
    p.add_argument("--num", type=int, default=8, help="images to draw")
    args = p.parse_args(argv)
    setup_logging(0, None)
    visualize_run(run_config(args), args.output_dir, args.num, resolve_device(args.device))
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
