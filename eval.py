"""Evaluate YOLOF on COCO-format or VOC data, or score an existing detections file.

    # a checkpoint on a COCO-format split (ROOT/annotations/instances_val2017.json + ROOT/val2017/)
    python eval.py --weight runs/r50/last.pth -d coco --root datasets/coco --split val2017 --out metrics.json
    # an existing detections file, no model (without --split: val2017 for coco, val for synthetic)
    python eval.py -d coco --root datasets/coco --split val2017 --results dets.json --out metrics.json
    # ... against the data of a config (its data.dataset, data.root and data.val_split)
    python eval.py --config config/quickstart.yaml --results dets.json
    # PASCAL VOC 2007 test, 11-point metric (VOC07 default) or area (VOC2010+)
    python eval.py --weight voc.pth -d voc --root VOCdevkit --year 2007 --split test --voc_metric area
    # ... and why it fails: TIDE errors, confusion matrix, worst / best images, beside metrics.json
    python eval.py --weight runs/quickstart/last.pth -d synthetic --out runs/analysis/metrics.json --analyze
    # a YOLO-layout or VOC-XML set: COCO metrics against its annotations in COCO form (docs/your_own_data.md)
    python eval.py --weight runs/mine/last.pth -d yolo --root my_data/data.yaml --split val
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

from cli import resolve_device, run_config
from data.build import DATASETS, build_dataset, build_test_loader
from evaluation.coco_eval import BACKENDS
from evaluation.evaluator import METRICS, ScoreOptions, predict
from models import build_model
from models.compile import compile_model
from models.fuse import prepare_for_inference
from tools.explore.launch import check_explore_args, explore_evaluation
from utils.checkpoint import load_model_weights
from utils.errors import UserError
from utils.precision import AMP_MODES
from utils.script import common_parser, run_script, setup_logging

logger = logging.getLogger("eval")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Evaluate YOLOF", parents=[common_parser()],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--weight", "-w", type=str, default=None, help="checkpoint to evaluate")
    p.add_argument("-d", "--dataset", choices=list(DATASETS), default=None, help="dataset kind (default: the config's)")
    p.add_argument("--root", type=str, default=None, help="dataset root (default: the config's)")
    p.add_argument("--split", type=str, default=None,
                   help="split (default: the config's val split; with --results and no --config: val2017 for coco, "
                        "test for voc, val for synthetic); VOC: test, val...")
    p.add_argument("--year", type=str, default="2007", help="VOC year")
    p.add_argument("--out", type=Path, default=Path("metrics.json"),
                   help="metrics JSON (PR curve PNG written next to it)")
    p.add_argument("--save_results", type=Path, default=None,
                   help="COCO: write detections JSON here; VOC: write devkit comp4 files into this folder")
    p.add_argument("--results", type=Path, default=None,
                   help="score existing detections without a model: COCO results JSON, or a folder of VOC comp4 files")
    p.add_argument("--backend", choices=BACKENDS, default="pycocotools")
    p.add_argument("--voc_metric", choices=["11point", "area"], default="11point")
    p.add_argument("--amp", choices=AMP_MODES, default="none", help="half precision inference on CUDA")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile (inductor) the network first (docs/deployment.md: when it pays)")
    p.add_argument("--batch_size", type=int, default=None,
                   help="images per process (default: data.test_batch_size, 1 for the official presets)")
    p.add_argument("--analyze", action="store_true",
                   help="COCO metric only: also write the error analysis (TIDE, confusion matrix, worst / best "
                        "images) into the folder of --out; python -m tools.analyze_errors has its options")
    p.add_argument("--explore", action="store_true",
                   help="then look at the detections (--save_results or --results) in the browser: "
                        "python -m tools.explore on 127.0.0.1:8000 (docs/error_analysis.md)")
    return p.parse_args(argv)


def _split_name(args, kind: str, val_split: str) -> str:
    """``--split`` (else ``val_split``) as data.build takes it; a VOC split without a year gets ``--year``."""
    split = args.split or val_split
    if kind == "voc" and "_" not in split:
        split = f"{args.year}_{split}"
    return split


def _options(args, **echo) -> ScoreOptions:
    return ScoreOptions(metrics_path=args.out, save_results=args.save_results, backend=args.backend,
                        use_07_metric=args.voc_metric == "11point", analyze=args.analyze, **echo)


def _check_analyzable(args, kind: str) -> None:
    metric = DATASETS[kind].metric
    if args.analyze and not METRICS[metric].analyzable:
        raise UserError(f"--analyze needs COCO-format ground truth; -d {kind} is scored with the {metric} metric")


def _score_files(args) -> dict:
    """No model: score ``--results`` (a COCO results JSON, or a folder of VOC comp4 files, as the dataset's metric
    reads them) against the split's ground truth: ``--config``'s data section (with -d, --root and --split over
    it), else -d / --root / --split with the dataset's default val split."""
    if not args.config and args.root is None:
        raise UserError("--results needs --root (or a --config whose data.root holds the annotations)")
    if not args.config:
        args.dataset = args.dataset or "coco"
    cfg = run_config(args)
    kind = cfg.data.dataset
    _check_analyzable(args, kind)
    split = _split_name(args, kind, cfg.data.val_split if args.config else DATASETS[kind].val_split)
    ground_truth = DATASETS[kind].ground_truth(cfg, split)
    if not args.results.exists():
        raise UserError(f"--results {args.results}: no such file or folder")
    metrics, _ = METRICS[DATASETS[kind].metric].score_file(ground_truth, args.results, _options(args, echo=print),
                                                           image_dir=DATASETS[kind].image_dir(cfg, split))
    return metrics


def _evaluate_model(args) -> dict:
    """Predict with ``--weight`` on the split and score it with the dataset's metric."""
    cfg = run_config(args, args.weight)
    _check_analyzable(args, cfg.data.dataset)
    split = _split_name(args, args.dataset or cfg.data.dataset, cfg.data.val_split)
    device = resolve_device(args.device)
    model = build_model(cfg).to(device)
    ckpt = load_model_weights(model, args.weight)
    model = prepare_for_inference(model)
    trained_on = ckpt.get("class_names")
    if cfg.data.dataset == "voc_xml" and not cfg.data.class_names and trained_on:  # the model's label order
        logger.info("voc_xml classes in the order %s was trained on: %s", args.weight, list(trained_on)[:10])
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, class_names=tuple(trained_on)))
    dataset = build_dataset(cfg, split, is_train=False)
    if trained_on and list(trained_on) != list(dataset.class_names):
        logger.warning("%s was trained on classes %s but %s has %s: labels are matched by position",
                       args.weight, list(trained_on)[:10], split, list(dataset.class_names)[:10])
    loader = build_test_loader(dataset, args.batch_size or cfg.data.test_batch_size, cfg.data.num_workers)
    if args.compile:
        compile_model(model)
    predictions = predict(model, loader, device, amp=args.amp)
    return METRICS[DATASETS[cfg.data.dataset].metric].score(dataset, predictions, _options(args))[0]


def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_logging()
    check_explore_args(args)
    if args.results is not None:
        metrics = _score_files(args)
    elif args.weight is None:
        raise UserError("pass --weight CKPT to evaluate a model, or --results FILE to score detections")
    else:
        metrics = _evaluate_model(args)
    shown = {k: round(v, 4) for k, v in metrics.items() if not k.startswith("AP_")}
    print(json.dumps(shown))
    print(f"metrics written to {args.out}")
    if args.explore:
        explore_evaluation(args)
    return metrics


if __name__ == "__main__":
    run_script(main)
