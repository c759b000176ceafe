"""What ``train.sh`` checks before it starts torchrun, so that a first launch says what is wrong once, in one line.

    python -m tools.launch_check 8gpu --config config/yolof_r50_c5_1x.yaml --data datasets/coco --gpus 8

In this order, stopping at the first that fails (exit status 2, one ``error:`` line with the fix):

1. the GPUs the mode needs against the GPUs this machine shows (``torch.cuda.device_count()``);
2. the ImageNet file the preset starts from (``model.backbone.weights``), or the detector of ``train.init_from``;
3. the dataset folder: ``DATA/annotations/instances_<train split>.json`` and ``DATA/<train split>/``.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

import torch

if __package__ in (None, ""):  # python tools/<name>.py: the repository root on sys.path (tools/_bootstrap.py)
    import _bootstrap  # noqa: F401

from config import load_config
from models.pretrained import pretrained_path
from utils.script import run_script
from utils.errors import UserError


def check_gpus(mode: str, needed: int) -> None:
    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if found < needed:
        fix = ("use `bash train.sh 1gpu` (or `1gpu-accum`: the official batch through accumulation)" if found
               else "train on a machine with GPUs; on this one, `bash scripts/quickstart.sh` trains on the CPU")
        raise UserError(f"train.sh {mode} needs {needed} GPU{'s' * (needed != 1)}, found {found} (torch.cuda.device_count()); {fix}")


def check_start(cfg) -> None:
    if cfg.train.init_from:
        if not Path(cfg.train.init_from).is_file():
            raise UserError(f"train.init_from: the detector {cfg.train.init_from} this preset starts from is missing "
                            f"(for the stage-2 recipe: the 9x model)")
        return
    pretrained_path(cfg.model.backbone)  # its error says which file, where it is published and where to put it


def check_data(data: Path, split: str) -> None:
    ann = data / "annotations" / f"instances_{split}.json"
    for needed, what in ((ann, "file"), (data / split, "folder")):
        if not needed.exists():
            raise UserError(f"dataset {what} {needed} not found: put COCO 2017 under {data} (annotations/, "
                            f"{split}/) or point DATA=... at your copy")


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.launch_check", description=__doc__.split("\n\n")[0])
    p.add_argument("mode", help="train.sh's mode (8gpu, 1gpu, 1gpu-accum, multinode)")
    p.add_argument("--config", required=True)
    p.add_argument("--data", type=Path, required=True, help="the COCO root train.sh passes as data.root")
    p.add_argument("--gpus", type=int, required=True, help="GPUs this machine must show")
    args = p.parse_args(argv)
    check_gpus(args.mode, args.gpus)
    cfg = load_config(args.config, [f"data.root={args.data}"])
    check_start(cfg)
    check_data(args.data, cfg.data.train_split)
    print(f"train.sh {args.mode}: {args.gpus} GPU(s), the start and {args.data} are in place")


if __name__ == "__main__":
    run_script(main)
