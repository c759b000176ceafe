"""Train YOLOF.

    python train.py --config config/quickstart.yaml --output_dir runs/quickstart      # CPU, synthetic data
    torchrun --nproc_per_node 8 train.py --config config/yolof_r50_c5_1x.yaml --output_dir runs/r50 \
        --opts data.root=datasets/coco                                                # the official recipe
    python train.py --config config/yolof_r50_c5_1x.yaml --vis_targets --output_dir runs/vis

Every YOLOF trick is a config switch: --opts data.random_shift=false model.matcher.name=iou_topk ...
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from utils.cli import common_parser, load_run_config, resolve_device, setup_logging


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train YOLOF", parents=[common_parser()],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--output_dir", "-o", type=Path, default=Path("runs/quickstart"), help="everything the run writes")
    p.add_argument("--accumulate", type=int, default=1,
                   help="gradient accumulation: N micro-batches per step (same update as an N-times larger batch)")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="resume from a checkpoint (default with no value: OUTPUT_DIR/last.pth)")
    p.add_argument("--max_iter", type=int, default=None, help="stop after this many steps (overrides the schedule)")
    p.add_argument("--vis_targets", action="store_true",
                   help="draw GT boxes and the anchors the matcher makes positive (and ignored) for a few "
                        "augmented training images into OUTPUT_DIR/vis_targets, then exit")
    p.add_argument("--vis_num", type=int, default=8, help="images for --vis_targets")
    p.add_argument("--no_progress", action="store_true", help="no tqdm progress bar")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from utils.distributed import init_distributed
    import os

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(args.device, local_rank)
    rank, local_rank, world = init_distributed(str(device))
    setup_logging(rank, args.output_dir)
    cfg = load_run_config(args)
    if args.vis_targets:
        from utils.visualize_targets import visualize_targets

        paths = visualize_targets(cfg, args.output_dir / "vis_targets", args.vis_num, device)
        logging.getLogger("train").info("wrote %d pictures to %s", len(paths), args.output_dir / "vis_targets")
        return
    from utils.engine import fit

    record = fit(cfg, args.output_dir, device, args.accumulate, args.resume, sys.argv, rank, world, args.max_iter,
                 args.num_workers, progress=not args.no_progress)
    if rank == 0:
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()}
        print(f"done: {shown}\noutputs in {args.output_dir}")


if __name__ == "__main__":
    main()
