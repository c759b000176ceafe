"""Convert a detection dataset between layouts: YOLO, VOC XML and COCO, and from Label Studio and CVAT exports.

    python -m tools.convert_dataset --from yolo --to coco my_yolo/data.yaml my_coco
    python -m tools.convert_dataset --from coco --to yolo tests/assets my_yolo --split val2017
    python -m tools.convert_dataset --from voc_xml --to coco my_xml_folder my_coco --copy
    python -m tools.convert_dataset --from labelstudio --to coco project-1.json my_coco --image_dir media/upload/1
    python -m tools.convert_dataset --from cvat --to voc_xml annotations.xml my_xml_folder
    python -m tools.convert_dataset --from coco --to yolo my_coco my_3_classes --classes car person motorbike=motorcycle

SRC, by ``--from`` (``--split`` picks splits; a source of one split is named by ``--split``, default train):

* ``yolo``: a ``data.yaml`` (:mod:`data.yolo`); every split key it has.
* ``voc_xml``: a folder (:mod:`data.voc_xml`); every sub-folder holding XML files is a split, or the folder
  itself is one when none is (``Annotations/`` and the like are not splits).
* ``coco``: a COCO root (every ``annotations/instances_<split>.json``, images in ``<split>/``) or one json
  (images in ``--image_dir``, else ``<root>/<split>/`` beside its ``annotations/`` folder, else its folder).
* ``labelstudio``: a Label Studio JSON-min, JSON or COCO export; ``cvat``: a CVAT for images 1.1 XML
  (:mod:`tools.convert.label_studio`, :mod:`tools.convert.cvat`); images in ``--image_dir``, else ``images/``
  beside the export, else its folder.

OUT, by ``--to`` (it must be empty or new), and the ``--opts`` to train on it (printed at the end):

* ``coco``: ``OUT/annotations/instances_<split>.json``, images in ``OUT/<split>/``.
* ``yolo``: ``OUT/data.yaml`` (no ``path``: the yaml's own folder, for ultralytics too), images in
  ``OUT/images/<split>/``, labels in ``OUT/labels/<split>/`` (an empty file for an image without boxes).
* ``voc_xml``: ``OUT/<split>/``, each image beside its XML file.

Images are symbolic links to the source's unless ``--copy``. COCO gets the boxes as read; YOLO and VOC XML get
them clipped to the image (ultralytics rejects a label file with coordinates outside [0, 1]). Zero-area boxes
are left out of all three. Crowd regions (COCO ``iscrowd``) become VOC ``difficult`` objects and are left out
of YOLO, which has no such thing. VOC XML holds integer pixels (1-based, inclusive: ``xmin = round(x1) + 1``,
``xmax = round(x2)``): within 0.5 px. YOLO holds 6 decimals. Classes: the union of the splits' class lists, in
order, so that every split numbers them alike (YOLO class k is COCO category k + 1).

The library is :mod:`tools.convert` (readers, writers, the tools' exports). Hand-written rather than with
``supervision`` or ``globox`` (measured in docs/your_own_data.md): the readers are the datasets' own (a
converted set reads back exactly as training reads the source), and what is left, the three writers, is a few
lines each.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

if __package__ in (None, ""):  # python tools/<name>.py: the repository root on sys.path (tools/_bootstrap.py)
    import _bootstrap  # noqa: F401

from tools.convert import SOURCES, WRITERS, convert, training_opts
from utils.script import run_script, setup_logging


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.convert_dataset", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--from", dest="source", required=True, choices=list(SOURCES))
    p.add_argument("--to", dest="target", required=True, choices=list(WRITERS))
    p.add_argument("src", type=Path, help="the source dataset (see above)")
    p.add_argument("out", type=Path, help="the folder to write (new or empty)")
    p.add_argument("--split", action="append", default=None,
                   help="a split to convert (repeatable; default: all); names a source of one split")
    p.add_argument("--image_dir", default=None, help="the images of a COCO json or a Label Studio / CVAT export")
    p.add_argument("--copy", action="store_true", help="copy the images (default: symbolic links)")
    p.add_argument("--classes", nargs="+", default=None, metavar="NAME[=NEW]",
                   help="keep only these classes, in this order (NAME=NEW renames one); the other classes' boxes are "
                        "left out (their objects stay in the images, unlabelled)")
    args = p.parse_args(argv)
    setup_logging()
    summary = convert(args.src, args.out, args.source, args.target, args)
    for split, s in summary.items():
        print(f"{split}: {s['images']} images, {s['boxes']} boxes written, {s['left_out']} left out "
              f"(zero-area{', crowd' if args.target == 'yolo' else ''} or outside the image)")
    print(f"wrote {args.out}; train on it with: --opts {training_opts(args.target, args.out, list(summary))}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
