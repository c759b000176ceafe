"""Dataset conversion between layouts, the library of tools/convert_dataset.py: read a source into COCO form per split
(:mod:`tools.convert.readers`: the datasets' own readers and the annotation tools' exports,
:mod:`tools.convert.label_studio`, :mod:`tools.convert.cvat`), number the classes alike, write a layout
(:mod:`tools.convert.writers`). :func:`convert` does the three; the command line's docstring says what each
source and target holds."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from tools.convert.readers import SOURCES, select_classes, unify_classes
from tools.convert.writers import WRITERS, Placer, training_opts
from utils.errors import UserError

__all__ = ["convert", "SOURCES", "WRITERS", "training_opts"]

logger = logging.getLogger("convert_dataset")


def convert(src: Path, out: Path, source: str, target: str, args: argparse.Namespace) -> dict[str, dict]:
    """Read ``src`` (a ``source`` layout), write ``out`` (a ``target`` layout); the per-split summary."""
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty: convert into a new or empty folder")
    splits = SOURCES[source](src, args)
    names = unify_classes(splits)
    if getattr(args, "classes", None):
        names, left_out = select_classes(splits, args.classes)
        logger.info("--classes: kept %s; %d box(es) of the other classes left out", ", ".join(names), left_out)
    out.mkdir(parents=True, exist_ok=True)
    placer = Placer(copy=args.copy)
    summary = WRITERS[target](out, splits, names, placer)
    for split, raw in splits.items():
        raw.log_issues(f"{source} {src} split {split!r}")
    if placer.missing:
        logger.warning("%d image(s) not found, not %s (e.g. %s)", len(placer.missing),
                       "copied" if args.copy else "linked", placer.missing[:3])
    return summary
