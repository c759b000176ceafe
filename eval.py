"""Evaluate YOLOF on COCO-format or VOC data, or score an existing detections file.

    # a checkpoint on a COCO-format split (ROOT/annotations/instances_val2017.json + ROOT/val2017/)
    python eval.py --weight runs/r50/last.pth -d coco --root datasets/coco --split val2017 --out metrics.json
    # an existing detections file, no model (without --split: val2017 for coco, val for synthetic)
    python eval.py -d coco --root datasets/coco --split val2017 --results dets.json --out metrics.json
    # ... against the data of a config (its data.dataset, data.root and data.val_split)
    python eval.py --config config/quickstart.yaml --results dets.json
    # PASCAL VOC 2007 test, 11-point metric (VOC07 default) or area (VOC2010+)
    python eval.py --weight voc.pth -d voc --root VOCdevkit --year 2007 --split test --voc_metric area
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from data.build import DATASETS
from evaluation.coco_eval import BACKENDS
from utils.cli import common_parser, load_run_config, resolve_device, run_script, setup_logging
from utils.errors import UserError
from utils.precision import AMP_MODES

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
    p.add_argument("--out", type=Path, default=Path("metrics.json"), help="metrics JSON (PR curve PNG written next to it)")
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
    return p.parse_args(argv)


def _split_name(args, kind: str, val_split: str) -> str:
    """``--split`` (else ``val_split``) as data.build takes it; a VOC split without a year gets ``--year``."""
    split = args.split or val_split
    if kind == "voc" and "_" not in split:
        split = f"{args.year}_{split}"
    return split


def _results_target(args) -> tuple[str, Path, str]:
    """(dataset kind, root, split) that ``--results`` is scored against: ``--config``'s data section (with -d,
    --root and --split over it), else -d / --root / --split with the dataset's default val split."""
    if args.config:
        d = load_run_config(args).data
        kind, root, val_split = d.dataset, d.root, d.val_split
    else:
        kind = args.dataset or "coco"
        root, val_split = args.root, DATASETS[kind].val_split
        if root is None:
            raise UserError("--results needs --root (or a --config whose data.root holds the annotations)")
    return kind, Path(root), _split_name(args, kind, val_split)


def _check_exists(results: Path) -> None:
    if not results.exists():
        raise UserError(f"--results {results}: no such file or folder")


def _score_voc_files(args, root: Path, split: str) -> dict:
    """The folder of comp4 files ``--results`` against the VOCdevkit ``root``."""
    from data.build import voc_image_sets
    from data.voc import VOCDetection
    from evaluation.evaluator import voc_annotations, voc_split_name, write_reports
    from evaluation.voc_eval import evaluate_voc, read_voc_results, summary_table, write_metrics_json

    dataset = VOCDetection(root, voc_image_sets(split), keep_difficult=True)
    _check_exists(args.results)
    try:
        dets = read_voc_results(args.results, voc_split_name(dataset), dataset.class_names)
    except ValueError as e:  # a malformed line, named with its file and line number
        raise UserError(str(e)) from None
    result = evaluate_voc(dets, voc_annotations(dataset), dataset.class_names,
                          use_07_metric=args.voc_metric == "11point")
    print(summary_table(result))
    write_reports(args.out, pr_curves=result.pr_curves, title="VOC", write_json=lambda p: write_metrics_json(result, p))
    return {"mAP": result.mAP}


def _score_coco_file(args, root: Path, split: str) -> dict:
    """The COCO results JSON ``--results`` against ``root/annotations/instances_<split>.json``."""
    from evaluation.coco_eval import evaluate_coco, load_detections, summary_table, validate_detections, write_metrics_json
    from evaluation.evaluator import write_reports

    ann = root / "annotations" / f"instances_{split}.json"
    if not ann.is_file():
        raise UserError(f"annotation file not found: {ann}")
    _check_exists(args.results)
    try:  # every problem of the file (ids, categories, boxes, scores) is named, with the file, in one line
        dets = load_detections(args.results)
        validate_detections(dets, str(ann), source=str(args.results))
    except ValueError as e:
        raise UserError(str(e)) from None
    result = evaluate_coco(str(ann), dets, backend=args.backend)
    print(summary_table(result))
    write_reports(args.out, pr_curves=result.pr_curves, title="COCO", write_json=lambda p: write_metrics_json(result, p))
    return dict(result.stats)


def _score_files(args) -> dict:
    """No model: score a detections file (COCO metric) or a folder of comp4 files (VOC metric)."""
    kind, root, split = _results_target(args)
    if DATASETS[kind].metric == "voc":
        return _score_voc_files(args, root, split)
    return _score_coco_file(args, root, split)


def _evaluate_model(args) -> dict:
    """Predict with ``--weight`` on the split and score it with the dataset's metric."""
    from data.build import build_dataset, build_test_loader
    from engine.checkpoint import load_model_weights
    from evaluation.evaluator import ScoreOptions, predict, score
    from models import build_model
    from models.fuse import prepare_for_inference
    from models.compile import compile_model

    cfg = load_run_config(args, args.weight)
    split = _split_name(args, args.dataset or cfg.data.dataset, cfg.data.val_split)
    device = resolve_device(args.device)
    model = build_model(cfg).to(device)
    ckpt = load_model_weights(model, args.weight)
    model = prepare_for_inference(model)
    dataset = build_dataset(cfg, split, is_train=False)
    trained_on = ckpt.get("class_names")
    if trained_on and list(trained_on) != list(dataset.class_names):
        logger.warning("%s was trained on classes %s but %s has %s: labels are matched by position",
                       args.weight, list(trained_on)[:10], split, list(dataset.class_names)[:10])
    workers = cfg.data.num_workers if args.num_workers is None else args.num_workers
    loader = build_test_loader(dataset, args.batch_size or cfg.data.test_batch_size, workers)
    if args.compile:
        compile_model(model)
    predictions = predict(model, loader, device, amp=args.amp)
    options = ScoreOptions(metrics_path=args.out, save_results=args.save_results, backend=args.backend,
                           use_07_metric=args.voc_metric == "11point")
    return score(dataset, predictions, dataset_kind=cfg.data.dataset, options=options)[0]


def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_logging()
    if args.results is not None:
        metrics = _score_files(args)
    elif args.weight is None:
        raise UserError("pass --weight CKPT to evaluate a model, or --results FILE to score detections")
    else:
        metrics = _evaluate_model(args)
    shown = {k: round(v, 4) for k, v in metrics.items() if not k.startswith("AP_")}
    print(json.dumps(shown))
    print(f"metrics written to {args.out}")
    return metrics


if __name__ == "__main__":
    run_script(main)
