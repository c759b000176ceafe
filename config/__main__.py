"""Print a preset's whole resolved config with the schema comment of each key.

    python -m config config/yolof_r50_dc5_1x.yaml                 # every key, resolved
    python -m config config/quickstart.yaml --changed             # only the keys that differ from the schema
    python -m config config/quickstart.yaml --opts solver.base_lr=0.002
    python -m config                                              # the schema's defaults (official R50-C5 1x)
    python -m config --write-listing                              # regenerate config/README.md
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from config import load_config
from config.listing import LISTING, changed_keys, format_config, listing, yaml_value
from utils.script import run_script


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m config", description=__doc__.split("\n\n")[0])
    p.add_argument("config", nargs="?", default=None, help="YAML preset (default: the schema's defaults)")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--changed", action="store_true", help="only the keys that differ from the schema's defaults")
    p.add_argument("--write-listing", action="store_true", help=f"write the reference of every preset to {LISTING}")
    args = p.parse_args(argv)
    if args.write_listing:
        LISTING.write_text(listing())
        print(f"wrote {LISTING}")
        return
    cfg = load_config(args.config, args.opts)
    if args.changed:
        for key, (value, default) in changed_keys(cfg).items():
            print(f"{key}: {yaml_value(value)}  # default {yaml_value(default)}")
    else:
        print(format_config(cfg), end="")


if __name__ == "__main__":
    run_script(main)
