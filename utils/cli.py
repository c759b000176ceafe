"""The argument parser shared by train.py, eval.py and test.py (argparse ``parents=``)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def common_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--config", "-c", type=str, default=None,
                   help="YAML preset under config/ (default: the one stored in --weight, else config/quickstart.yaml)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:1 ...")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. --opts solver.base_lr=0.01 model.matcher.name=iou_topk")
    p.add_argument("--num_workers", type=int, default=None, help="DataLoader workers (default: data.num_workers)")
    return p


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {name} asked for CUDA, but torch.cuda.is_available() is False")
    return torch.device(name)


def setup_logging(rank: int = 0, output_dir: Path | None = None) -> None:
    """Log to stderr (and output_dir/log.txt) on rank 0 only; other ranks log warnings."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if output_dir is not None and rank == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(output_dir / "log.txt"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def load_run_config(args, weight: str | None = None):
    """The config: --config (+ --opts), or the one stored in the checkpoint (+ --opts).

    ``-d/--dataset`` and ``--root``, where a script has them, override ``data.dataset`` / ``data.root``.
    """
    from config import load_config
    from config.loader import _set_dotted, config_from_dict, parse_overrides

    args.opts = list(args.opts)
    if getattr(args, "dataset", None):
        args.opts.append(f"data.dataset={args.dataset}")
    if getattr(args, "root", None):
        args.opts.append(f"data.root={args.root}")
    if args.config:
        return load_config(args.config, args.opts)
    if weight:
        from utils.checkpoint import load_checkpoint

        try:
            ckpt = load_checkpoint(weight)
        except (ValueError, FileNotFoundError) as e:
            raise SystemExit(f"error: {e}") from None
        if "config" in ckpt:
            data = ckpt["config"]
            for k, v in parse_overrides(args.opts).items():
                _set_dotted(data, k, v)
            return config_from_dict(data)
        raise SystemExit(f"{weight} holds no config: pass --config")
    return load_config(REPO / "config" / "quickstart.yaml", args.opts)
