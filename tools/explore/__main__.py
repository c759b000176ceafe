"""Look at detections in the browser: errors by TIDE type, two runs side by side, live predictions.

    # one run: the split's images, sortable by each TIDE error type, by their own AP50, by name
    python -m tools.explore --gt datasets/coco/annotations/instances_val2017.json --results dets.json
    # two runs side by side (A, B), the grid sortable by what B fixes and breaks; a model for live predictions
    python -m tools.explore --gt ann.json --images datasets/coco/val2017 --results a.json --results b.json \\
        --weight runs/r50/last.pth --backend openvino --precision int8
    # after an evaluation: eval.py ... --save_results dets.json --explore

Open the address it prints (http://127.0.0.1:8000/ by default); Ctrl+C stops it. The images are found beside
the annotations (ROOT/annotations/instances_SPLIT.json -> ROOT/SPLIT/) unless --images names the folder.
See docs/error_analysis.md ("In the browser").
"""
from __future__ import annotations

import argparse
from pathlib import Path

from deploy.backends import BACKENDS
from tools.analyze_errors import default_image_dir, load_ground_truth
from tools.explore.launch import build_explorer, explore
from utils.errors import UserError
from utils.precision import PRECISIONS
from utils.script import run_script, setup_logging


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.explore", description="results explorer in the browser",
                                epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gt", type=Path, required=True, help="COCO instances json (the ground truth)")
    p.add_argument("--results", type=Path, action="append", required=True,
                   help="COCO results json (eval.py --save_results); twice for runs A and B side by side")
    p.add_argument("--images", type=Path, default=None,
                   help="folder of the gt's file_name entries (default: ROOT/SPLIT beside ROOT/annotations/"
                        "instances_SPLIT.json when it exists; else the images are listed without pictures)")
    p.add_argument("--weight", type=str, default=None,
                   help="checkpoint (or exported .onnx) for live predictions on dropped images")
    p.add_argument("--backend", choices=list(BACKENDS), default="pytorch", help="live predictions: Predictor backend")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="live predictions: Predictor precision")
    p.add_argument("--calib", type=str, default=None,
                   help="live predictions, int8: folder of calibration images (default: the config's training split)")
    p.add_argument("--device", default="cpu", help="live predictions: cpu, cuda, cuda:1 ...")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (0: a free one)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logging()
    gt = load_ground_truth(args.gt)
    image_dir = args.images if args.images is not None else default_image_dir(args.gt)
    if image_dir is None:
        print(f"no image folder beside {args.gt} (--images): the images are listed without pictures")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: not a port number (0-65535)")
    explore(build_explorer(gt, str(args.gt), args.results, image_dir, weight=args.weight, backend=args.backend,
                           precision=args.precision, calib=args.calib, device=args.device, host=args.host,
                           port=args.port))


if __name__ == "__main__":
    run_script(main)
