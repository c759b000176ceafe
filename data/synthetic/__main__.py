"""Generate the synthetic dataset a config names, into its data.root (or --out).

    python -m data.synthetic                                           # the quickstart's data/synthetic_cache
    python -m data.synthetic --config config/small_cpu.yaml --opts data.synthetic.num_train=500 --out /tmp/shapes

The folder is what training with the same config reads (``data.synthetic``: sizes, counts, seed); a folder already
up to date is left as it is.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from cli import run_config
from data.synthetic.generate import generate_synthetic_coco
from utils.errors import UserError
from utils.script import run_script


def main(argv: Optional[Sequence[str]] = None) -> Path:
    p = argparse.ArgumentParser(prog="python -m data.synthetic", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", "-c", default=None, help="YAML preset (default: config/quickstart.yaml)")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides (data.synthetic.*)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the config's data.root)")
    p.add_argument("--workers", type=int, default=None, help="rendering processes (default: min(4, CPUs))")
    p.add_argument("--force", action="store_true", help="regenerate even when the folder is up to date")
    args = p.parse_args(argv)
    cfg = run_config(args)
    if args.out is None and cfg.data.dataset != "synthetic":
        raise UserError(f"the config's data.dataset is {cfg.data.dataset}, so its data.root {cfg.data.root} is not a "
                        "synthetic folder: pass --out")
    out = generate_synthetic_coco(args.out or Path(cfg.data.root), cfg.data.synthetic, workers=args.workers,
                                  force=args.force, verbose=True)
    print(out.resolve())
    return out


if __name__ == "__main__":
    run_script(main)
