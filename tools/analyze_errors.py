"""Why a detector fails: TIDE error breakdown, confusion matrix, worst and best images of a detections file.

    # detections written by eval.py --save_results, against the ground truth they were made on
    python -m tools.analyze_errors --gt data/synthetic_cache/annotations/instances_val.json \\
        --results runs/eval/dets.json --out runs/analysis
    # the images are found beside the annotations (ROOT/annotations/instances_SPLIT.json -> ROOT/SPLIT/),
    # or pass --images DIR; eval.py --analyze runs the same analysis after scoring a model

Writes into --out: tide.json, confusion_matrix.json / .png, error_analysis.json, worst_images/, best_images/
(see evaluation/error_analysis.py and docs/error_analysis.md).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):  # python tools/<name>.py: the repository root on sys.path (tools/_bootstrap.py)
    import _bootstrap  # noqa: F401

from evaluation.coco_eval import load_detections, validate_detections
from evaluation.error_analysis import AnalysisOptions, analyze_errors
from utils.script import run_script, setup_logging
from utils.errors import UserError

logger = logging.getLogger("analyze_errors")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="TIDE errors, confusion matrix, worst / best images", epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gt", type=Path, required=True, help="COCO instances json (the ground truth)")
    p.add_argument("--results", type=Path, required=True, help="COCO results json (eval.py --save_results)")
    p.add_argument("--out", type=Path, default=Path("error_analysis"), help="output folder")
    p.add_argument("--images", type=Path, default=None,
                   help="folder of the gt's file_name entries (default: ROOT/SPLIT beside ROOT/annotations/"
                        "instances_SPLIT.json when it exists; else no images are drawn)")
    d = AnalysisOptions()
    p.add_argument("--score_thresh", type=float, default=d.score_thresh,
                   help="confusion matrix and drawn images: detections scoring below are left out")
    p.add_argument("--num_images", type=int, default=d.num_images, help="worst and best images drawn (each)")
    p.add_argument("--bg_thresh", type=float, default=d.bg_thresh,
                   help="TIDE: a false positive with IoU at or below this with every gt is background")
    return p.parse_args(argv)


def load_ground_truth(path: Path) -> dict:
    """The COCO instances dict at ``path``, with a clear error for a missing or malformed file."""
    if not path.is_file():
        raise UserError(f"--gt {path}: no such file")
    try:
        gt = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not a valid json file ({e})") from None
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(gt, dict) or k not in gt]
    if missing:
        raise UserError(f"{path}: not a COCO instances file (no {', '.join(missing)})")
    return gt


def load_results(path: Path, gt: dict, gt_path: Path) -> list[dict]:
    """The detections of ``path``, checked against ``gt`` (every problem named with the file)."""
    if not path.is_file():
        raise UserError(f"--results {path}: no such file")
    try:
        dets = load_detections(path)
        validate_detections(dets, gt, source=str(path))
    except ValueError as e:
        raise UserError(f"{e} (ground truth: {gt_path})") from None
    return dets


def default_image_dir(gt_path: Path) -> Optional[Path]:
    """ROOT/SPLIT for ROOT/annotations/instances_SPLIT.json (this repository's COCO layout), if it exists."""
    name = gt_path.stem
    if gt_path.parent.name == "annotations" and name.startswith("instances_"):
        folder = gt_path.parent.parent / name[len("instances_"):]
        if folder.is_dir():
            return folder
    return None


def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_logging()
    gt = load_ground_truth(args.gt)
    dets = load_results(args.results, gt, args.gt)
    image_dir = args.images if args.images is not None else default_image_dir(args.gt)
    if args.images is not None and not args.images.is_dir():
        raise UserError(f"--images {args.images}: no such folder")
    if image_dir is None:
        logger.info("no image folder (--images): the worst and best images are listed, not drawn")
    tide, report = analyze_errors(gt, dets, args.out, image_dir=image_dir, options=AnalysisOptions(
        score_thresh=args.score_thresh, num_images=args.num_images, bg_thresh=args.bg_thresh))
    print(report)
    return tide.dap


if __name__ == "__main__":
    run_script(main)
