"""Draw training samples as the model sees them: after the training transforms (mosaic, crop, distortion, flip,
shift, resize: ``data.build.build_dataset(cfg, train_split, is_train=True)``), with their boxes and class names
(mmdetection's ``browse_dataset``).

    python -m tools.browse_dataset --config config/quickstart.yaml -n 8 --out runs/browse
    python -m tools.browse_dataset --config config/yolof_csp_d53_dc5_3x.yaml --opts data.root=datasets/coco --show

The samples and their augmentation are those of ``train.py --vis_targets`` for the same seed
(``train.seed``; :func:`tools.visualize_targets.augmented_samples`), drawn with the same code
(:func:`utils.visualize.draw_detections`); ``--vis_targets`` adds the anchors the matcher picks.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import cv2

if __package__ in (None, ""):  # python tools/<name>.py: the repository root on sys.path (tools/_bootstrap.py)
    import _bootstrap  # noqa: F401

from data.build import build_dataset
from tools.visualize_targets import augmented_samples, image_to_bgr, sample_path
from cli import run_config
from utils.script import common_parser, run_script, setup_logging
from utils.visualize import draw_detections

logger = logging.getLogger("browse_dataset")


def browse(cfg, num_images: int, out_dir: Optional[Path] = None, *, show: bool = False) -> list[Path]:
    """Draw ``num_images`` augmented training samples into ``out_dir`` (their paths) and/or a window."""
    dataset = build_dataset(cfg, cfg.data.train_split, is_train=True)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, image, target in augmented_samples(dataset, num_images, cfg.train.seed):
        canvas = draw_detections(image_to_bgr(image, cfg.model.input_format), target["boxes"], target["labels"],
                                 class_names=dataset.class_names)
        logger.info("%s: %d boxes, %d x %d", Path(target["file_name"]).name, len(target["boxes"]), canvas.shape[1],
                    canvas.shape[0])
        if out_dir is not None:
            paths.append(sample_path(out_dir, n, target))
            cv2.imwrite(str(paths[-1]), canvas)
        if show:
            _show(canvas, f"{n}: {Path(target['file_name']).name}")
    return paths


def _show(canvas, title: str) -> None:
    """A window per sample (matplotlib: the OpenCV wheel here is headless); close it for the next."""
    import matplotlib.pyplot as plt  # optional

    plt.figure(title)
    plt.imshow(canvas[:, :, ::-1])
    plt.axis("off")
    plt.show()


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.browse_dataset", description=__doc__.split("\n\n")[0],
                                parents=[common_parser()], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__)
    p.add_argument("-n", "--num", type=int, default=8, help="training samples to draw")
    p.add_argument("--out", type=Path, default=None, help="folder for the pictures (default runs/browse_dataset "
                                                          "unless --show)")
    p.add_argument("--show", action="store_true", help="show each sample in a window")
    args = p.parse_args(argv)
    setup_logging()
    out = args.out or (None if args.show else Path("runs/browse_dataset"))
    paths = browse(run_config(args), args.num, out, show=args.show)
    if out is not None:
        print(f"wrote {len(paths)} pictures to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
