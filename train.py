"""Train YOLOF.

    python train.py --config config/quickstart.yaml --output_dir runs/quickstart      # CPU, synthetic data
    torchrun --nproc_per_node 8 train.py --config config/yolof_r50_c5_1x.yaml --output_dir runs/r50 \
        --opts data.root=datasets/coco                                                # the official recipe
    python train.py --config config/yolof_r50_c5_1x.yaml --vis_targets --output_dir runs/vis
    python train.py --config config/quickstart.yaml --output_dir runs/mine \
        --opts data.dataset=coco data.root=my_data model.num_classes=auto           # a COCO-format set of your own

Every YOLOF trick is a config switch: --opts data.random_shift=false model.matcher.name=iou_topk ...
--resume continues a run exactly; a run killed after its last step resumes into its final evaluation.
A folder that holds a run is never overwritten: the same command again (or a torchrun --max-restarts restart)
continues it from its last.pth; another config stops with one line (--resume, another --output_dir, or
--overwrite to discard the old run on purpose).
At the end the run's curves are drawn into OUTPUT_DIR/curves.png (tools/plot_runs.py).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from cli import resolve_device, run_config
from engine.run_start import user_errors_end_the_run
from engine.trainer import RunOptions, fit
from tools.plot_runs import plot_runs
from tools.visualize_targets import visualize_run
from utils.distributed import destroy_distributed, init_distributed
from utils.script import common_parser, run_script, setup_logging

logger = logging.getLogger("train")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train YOLOF", parents=[common_parser()],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--output_dir", "-o", type=Path, default=Path("runs/quickstart"), help="everything the run writes")
    p.add_argument("--accumulate", type=int, default=1,
                   help="gradient accumulation: N micro-batches per step (same update as an N-times larger batch)")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="resume from a checkpoint (default with no value: OUTPUT_DIR/last.pth), whatever its config")
    p.add_argument("--overwrite", action="store_true",
                   help="discard the run OUTPUT_DIR holds and start a new one (without it a run is never overwritten)")
    p.add_argument("--max_iter", type=int, default=None, help="stop after this many steps (overrides the schedule)")
    p.add_argument("--vis_targets", action="store_true",
                   help="draw GT boxes and the anchors the matcher makes positive (and ignored) for a few "
                        "augmented training images into OUTPUT_DIR/vis_targets, then exit")
    p.add_argument("--vis_num", type=int, default=8, help="images for --vis_targets")
    p.add_argument("--no_progress", action="store_true", help="no tqdm progress bar")
    p.add_argument("--finetune", metavar="CKPT", default=None,
                   help="start from a trained detector of other classes (= --opts train.init_from=CKPT): every tensor "
                        "that fits is loaded, classifier rows by class name (docs/your_own_data.md, fine-tuning)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile (inductor) the network for the training steps (= --opts solver.compile=true; "
                        "docs/deployment.md has the measurements)")
    args = p.parse_args(argv)
    if args.compile:
        args.opts = list(args.opts) + ["solver.compile=true"]
    args.opts = list(args.opts) + ([f"train.init_from={args.finetune}"] if args.finetune else [])
    return args


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)

    device = resolve_device(args.device, int(os.environ.get("LOCAL_RANK", "0")))  # torchrun sets LOCAL_RANK
    rank, _, _ = init_distributed(str(device))
    try:
        setup_logging(rank, args.output_dir)
        with user_errors_end_the_run(args.output_dir, argv):  # an elastic restart never replays a user error
            _train(args, argv, device, rank)
    finally:
        destroy_distributed()


def _train(args, argv, device, rank: int) -> None:
    cfg = run_config(args)
    if args.vis_targets:  # the same as tools/visualize_targets.py
        visualize_run(cfg, args.output_dir / "vis_targets", args.vis_num, device)
        return

    record = fit(cfg, RunOptions(args.output_dir, device, accumulate=args.accumulate, resume=args.resume,
                                 overwrite=args.overwrite, argv=argv, max_iter=args.max_iter,
                                 progress=not args.no_progress))
    if rank == 0:
        plot_own_run(args.output_dir)
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()}
        print(f"done: {shown}\noutputs in {args.output_dir}")


def plot_own_run(output_dir: Path) -> None:
    """OUTPUT_DIR/curves.png, as tools/plot_runs.py draws it (a failed plot never fails the run)."""
    try:
        plot_runs([output_dir], output_dir / "curves.png")
    except Exception as e:
        logger.warning("could not draw %s: %s", output_dir / "curves.png", e)


if __name__ == "__main__":
    run_script(main)
