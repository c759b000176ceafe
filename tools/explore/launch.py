"""Start the explorer: from its command line (``python -m tools.explore``) or after ``eval.py ... --explore``.

:func:`explore` loads the ground truth and the results files (every problem one line naming the file), binds
the port first (a port in use fails before the loading), builds the :class:`~tools.explore.catalog.Catalog`
and the live model, and serves until Ctrl+C. ``eval.py --explore`` calls :func:`check_explore_args` before
evaluating and :func:`explore_evaluation` after: the split's ground truth and images, the detections the
evaluation wrote (``--save_results``) or scored (``--results``), and ``--weight`` as the live model.
"""
from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from typing import Optional, Sequence

from cli import run_config
from data.build import DATASETS
from evaluation.evaluator import METRICS
from tools.analyze_errors import load_ground_truth, load_results
from tools.explore.catalog import Catalog
from tools.explore.live import LiveModel
from tools.explore.server import Explorer, bind
from utils.errors import UserError

__all__ = ["explore", "build_explorer", "check_explore_args", "explore_evaluation", "run_names"]

logger = logging.getLogger("explore")

EVAL_PORT = 8000  # eval.py --explore: this port, or a free one when it is taken


def run_names(paths: Sequence[Path]) -> list[str]:
    """``A: <stem>``, ``B: <stem>``: the runs' names on the page, told apart even when the stems are equal."""
    return [f"{'AB'[k]}: {Path(p).stem}" for k, p in enumerate(paths)]


def build_explorer(gt: dict, gt_source: str, results: Sequence[Path], image_dir: Optional[Path], *,
                   weight: Optional[str] = None, backend: str = "pytorch", precision: str = "fp32",
                   calib: Optional[str] = None, device: str = "cpu", host: str = "127.0.0.1", port: int = 8000,
                   sock: Optional[socket.socket] = None) -> Explorer:
    """The explorer over ``gt`` (a COCO instances dict read from ``gt_source``) and one or two results files,
    on ``sock`` or ``host:port``, bound before anything is loaded."""
    if not 1 <= len(results) <= 2:
        raise UserError(f"--results: one or two results files (runs A and B), got {len(results)}")
    if image_dir is not None and not Path(image_dir).is_dir():
        raise UserError(f"--images {image_dir}: no such folder")
    sock = sock or bind(host, port)
    try:
        start = time.perf_counter()
        runs = [(name, str(path), load_results(Path(path), gt, Path(gt_source)))
                for name, path in zip(run_names(results), results)]
        catalog = Catalog(gt, runs, Path(image_dir) if image_dir is not None else None)
        logger.info("%d images, %s detections, matched in %.1f s", len(catalog.images),
                    " + ".join(str(len(r.det_score)) for r in catalog.runs), time.perf_counter() - start)
        live = None
        if weight is not None:
            if not Path(weight).is_file():
                raise UserError(f"--weight {weight}: no such file")
            live = LiveModel(weight, backend=backend, precision=precision, calib=calib, device=device,
                             categories=catalog.categories)
        return Explorer(catalog, live, sock=sock)
    except BaseException:
        sock.close()
        raise


def explore(explorer: Explorer) -> None:
    """Serve until Ctrl+C, the address printed first."""
    print(f"explorer: {explorer.url} (Ctrl+C stops it)", flush=True)
    explorer.run()


def check_explore_args(args) -> None:
    """eval.py --explore, before the evaluation: it needs a COCO results file to show."""
    if not getattr(args, "explore", False):
        return
    if getattr(args, "dataset", None) == "voc":
        raise UserError("--explore needs COCO-format ground truth; -d voc is scored with the voc metric")
    if args.results is None and args.save_results is None:
        raise UserError("--explore shows a detections file: add --save_results FILE (or score one with --results)")


def explore_evaluation(args) -> None:
    """eval.py --explore, after the evaluation: the explorer on the split, the detections and ``--weight``."""
    cfg = run_config(args, None if args.results is not None else args.weight)
    kind = cfg.data.dataset
    if not METRICS[DATASETS[kind].metric].analyzable:
        raise UserError(f"--explore needs COCO-format ground truth; -d {kind} is scored with the "
                        f"{DATASETS[kind].metric} metric")
    # the split eval.py scored: --split, else the config's val split (the dataset's when scoring a file alone)
    split = args.split or (cfg.data.val_split if args.config or args.results is None else DATASETS[kind].val_split)
    truth = DATASETS[kind].ground_truth(cfg, split)
    if isinstance(truth, (str, Path)):
        gt, source = load_ground_truth(Path(truth)), str(truth)
    else:  # an in-memory COCO object (YOLO, VOC XML layouts)
        gt, source = truth.dataset, f"{cfg.data.root} ({split})"
    folder = Path(DATASETS[kind].image_dir(cfg, split))  # where the loader reads the split's images
    image_dir = folder if folder.is_dir() else None
    results = args.results if args.results is not None else args.save_results
    try:
        sock = bind("127.0.0.1", EVAL_PORT)
    except UserError:
        logger.info("port %d is in use: the explorer takes a free one", EVAL_PORT)
        sock = bind("127.0.0.1", 0)
    explore(build_explorer(gt, source, [Path(results)], image_dir, weight=args.weight, sock=sock))
