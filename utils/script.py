"""The project-free parts of every script: the shared argument parser (argparse ``parents=``), logging set-up,
and :func:`run_script`, the one place where a user error becomes a one-line exit (the config of a run and the
device are cli.py's: they need the families)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

from utils.errors import UserError


def common_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--config", "-c", type=str, default=None,
                   help="YAML preset under config/ (default: the one stored in --weight, else config/quickstart.yaml)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:1 ...")
    p.add_argument("--opts", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. --opts solver.base_lr=0.01 model.matcher.name=iou_topk (repeatable; "
                        "a later value of a key wins)")
    p.add_argument("--num_workers", type=int, default=None, help="DataLoader workers: sets data.num_workers")
    return p


def setup_logging(rank: int = 0, output_dir: Path | None = None) -> None:
    """Log to stderr (and output_dir/log.txt) on rank 0 only; other ranks log warnings."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if output_dir is not None and rank == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(output_dir / "log.txt"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def user_message(e: UserError) -> str:
    """The one line of ``e``. A DataLoader worker's exception reaches the main process re-raised with the worker's
    traceback as its message ("Caught X in DataLoader worker process 0. Original Traceback ..."), whose last line
    is ``module.X: <the message>``: that message is kept."""
    text = str(e)
    if "\nOriginal Traceback" in text:
        head, _, message = text.rstrip().splitlines()[-1].partition(": ")
        if head.split(".")[-1] == type(e).__name__:
            return message
    return text


def run_script(main: Callable[[], Any]) -> Any:
    """Run a script's ``main``: a :class:`UserError` (bad input: a file, an id, a config value) ends the program
    with its one-line message on stderr and exit status 2; any other exception is a bug and keeps its traceback.
    Under torchrun every process exits with 2 and only rank 0 prints the line (all ranks meet the same error)."""
    try:
        return main()
    except UserError as e:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"error: {user_message(e)}", file=sys.stderr)
        raise SystemExit(2) from None
