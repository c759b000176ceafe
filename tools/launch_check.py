"""The preflight of ``train.sh``: every mistake the workers would meet deterministically, found once, before any
worker starts, with the interpreter that will run them.

    python -m tools.launch_check 8gpu --nproc 8 -- --config config/yolof_r50_c5_1x.yaml --output_dir runs/r50 \\
        --opts data.root=datasets/coco
    (everything after -- is train.py's command line, as train.sh passes it to the workers)

In this order, stopping at the first that fails (exit status 2, one ``error:`` line with the fix):

1. train.py's arguments and the config they make (unknown keys, bad values);
2. the GPUs: as many as processes on this node (``torch.cuda.device_count()``; when torch sees none, why:
   ``utils.gpu_info``), unless train.py runs with ``--device cpu``;
3. processes x ``--accumulate`` divides ``solver.batch_size``;
4. the run folder, decided exactly as the workers will (``engine.run_folder.plan_start``): a new run, the run it
   holds continued, or a refusal; a run continued from a checkpoint of another global batch is refused;
5. a new run's start: the ImageNet file of ``model.backbone.weights``, or the detector of ``train.init_from``;
6. the COCO folder (``data.dataset: coco``): ``annotations/instances_<train split>.json`` and ``<train split>/``.

On success it prints one line: what will run, and where.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

if __package__ in (None, ""):  # python tools/<name>.py: the repository root on sys.path (tools/_bootstrap.py)
    import _bootstrap  # noqa: F401

import train
from cli import run_config
from config import config_to_dict
from engine.build import batch_per_process
from engine.checkpointer import check_same_batch
from engine.run_folder import plan_start
from engine.run_start import check_start
from utils.errors import UserError
from utils.gpu_info import visible_gpus, why_no_cuda
from utils.script import run_script


def check_gpus(mode: str, needed: int) -> None:
    found = visible_gpus()
    if found >= needed:
        return
    fix = ("use `bash train.sh 1gpu` (or `1gpu-accum`: the official batch through accumulation)" if found
           else f"{why_no_cuda()}; on a machine without GPUs `bash scripts/quickstart.sh` trains on the CPU")
    raise UserError(f"train.sh {mode} needs {needed} GPU{'s' * (needed != 1)}, found {found} "
                    f"(torch.cuda.device_count()); {fix}")


def check_coco(data: Path, split: str) -> None:
    ann = data / "annotations" / f"instances_{split}.json"
    for needed, what in ((ann, "file"), (data / split, "folder")):
        if not needed.exists():
            raise UserError(f"dataset {what} {needed} not found: put COCO 2017 under {data} (annotations/, "
                            f"{split}/) or point DATA=... at your copy")


def preflight(mode: str, nproc: int, nnodes: int, train_argv: Sequence[str], *, gpus_here: bool = True) -> str:
    """Run the checks of the module docstring (the GPUs only where the workers run: ``gpus_here``); returns the
    line that says what will run."""
    args = train.parse_args(list(train_argv))
    cfg = run_config(args)
    if gpus_here and not args.device.startswith("cpu"):
        check_gpus(mode, nproc)
    processes = nproc * nnodes
    per_process = batch_per_process(cfg.solver.batch_size, processes, args.accumulate)
    plan = plan_start(args.output_dir, config_to_dict(cfg), resume=args.resume, overwrite=args.overwrite)
    if plan.resume_from is not None:
        checkpoint = torch.load(plan.resume_from, map_location="cpu", weights_only=True, mmap=True)
        check_same_batch(checkpoint, cfg.solver.batch_size, plan.resume_from)
    else:
        check_start(cfg)
    if cfg.data.dataset == "coco":
        check_coco(Path(cfg.data.root), cfg.data.train_split)
    return (f"train.sh {mode}: batch {cfg.solver.batch_size} = {processes} process(es) x {per_process} images x "
            f"accumulate {args.accumulate}; {plan.reason}")


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.launch_check", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("mode", help="train.sh's mode (8gpu, 1gpu, 1gpu-accum, multinode), for the messages")
    p.add_argument("--nproc", type=int, required=True, help="processes on this node (one per GPU)")
    p.add_argument("--nnodes", type=int, default=1, help="nodes of the run (processes = nproc x nnodes)")
    argv = list(argv if argv is not None else sys.argv[1:])
    split = argv.index("--") if "--" in argv else len(argv)  # after --: train.py's own arguments
    args = p.parse_args(argv[:split])
    print(preflight(args.mode, args.nproc, args.nnodes, argv[split + 1:]))


if __name__ == "__main__":
    run_script(main)
