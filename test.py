"""Run YOLOF on images, a folder, a video or a dataset split, and draw the detections.

    python test.py --weight runs/quickstart/last.pth --input photo.jpg --save_dir vis/
    python test.py --weight runs/quickstart/last.pth --input images/ --save_dir vis/ --score_thresh 0.3
    python test.py --weight runs/quickstart/last.pth --input clip.mp4 --save_dir vis/
    python test.py --weight runs/quickstart/last.pth -d synthetic --split val --save_dir vis/ --show
    python test.py --weight runs/r50/last.pth --input photo.jpg --precision bf16       # bf16 autocast
                                                                                       # (where the CPU has it)
    python test.py --weight yolof.onnx --backend onnxruntime --input photo.jpg        # tools/export_onnx.py output
    python test.py --weight runs/r50/last.pth --input photo.jpg --backend openvino    # OpenVINO (fp32; bf16 too)
    python test.py --weight runs/quickstart/last.pth -d synthetic --backend openvino --precision int8  # NNCF int8,
                                                  # calibrated on 100 training images (--calib FOLDER: yours)

A thin script over deploy.predictor.Predictor (the library API).
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import cv2

from cli import resolve_device, run_config
from data.build import DATASETS, build_dataset
from data.transforms import Compose
from deploy.backends import BACKENDS
from deploy.predictor import Predictor
from deploy.quantize import CALIBRATION_SIZE
from utils.errors import UserError
from utils.precision import PRECISIONS
from utils.script import common_parser, run_script, setup_logging
from utils.visualize import draw_detections

logger = logging.getLogger("test")
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Draw YOLOF detections", parents=[common_parser()],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--weight", "-w", required=True, help="checkpoint")
    p.add_argument("--input", "-i", type=Path, default=None, help="an image, a folder of images, or a video")
    p.add_argument("-d", "--dataset", choices=list(DATASETS), default=None,
                   help="run on a dataset split instead of --input")
    p.add_argument("--root", default=None, help="dataset root (default: the config's)")
    p.add_argument("--split", default=None, help="dataset split (default: the config's val split)")
    p.add_argument("--save_dir", type=Path, default=Path("outputs/test"), help="where pictures / videos go")
    p.add_argument("--score_thresh", type=float, default=0.3, help="draw detections above this score")
    p.add_argument("--max_images", type=int, default=None, help="stop after this many images")
    p.add_argument("--show", action="store_true", help="also show each picture in a window (when a display exists)")
    p.add_argument("--backend", choices=list(BACKENDS), default="pytorch",
                   help="onnxruntime / openvino: run --weight as an .onnx file (or export the checkpoint first) on "
                        "ONNX Runtime / OpenVINO (docs/deployment.md)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="bf16: where the CPU (or GPU) supports it, else fp32 with a log line; fp16: CUDA only; "
                        "int8: openvino, quantized by NNCF after calibration")
    p.add_argument("--calib", type=Path, default=None,
                   help="int8: a folder of calibration images (default: the config's training split)")
    p.add_argument("--calib_size", type=int, default=CALIBRATION_SIZE, help="int8: calibration images")
    return p.parse_args(argv)


def display_available() -> bool:
    if os.name != "nt" and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        return False
    try:
        cv2.namedWindow("yolof-probe", cv2.WINDOW_NORMAL)
        cv2.destroyWindow("yolof-probe")
        return True
    except cv2.error:  # opencv-python-headless has no GUI
        return False


def _iter_inputs(args, cfg):
    """(name, BGR image) pairs from --input or a dataset split."""
    if args.dataset or args.input is None:
        split = args.split or cfg.data.val_split
        ds = build_dataset(cfg, split, is_train=False, transforms=Compose([]))
        for i in range(len(ds)):
            path = ds.get_file_name(i)
            image = cv2.imread(path, cv2.IMREAD_COLOR)
            if image is None:
                logger.warning("skipping unreadable image %s", path)
                continue
            yield Path(path).name, image
        return
    path = args.input
    if not path.exists():
        raise UserError(f"--input {path} does not exist")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS) if path.is_dir() else [path]
    if path.is_dir() and not files:
        raise UserError(f"--input {path}: no images ({', '.join(sorted(IMAGE_EXTS))}) in this folder")
    for f in files:
        image = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if image is None:
            logger.warning("skipping %s: OpenCV cannot read it as an image", f)
            continue
        yield f.name, image


def run_video(args, predictor, draw) -> None:
    cap = cv2.VideoCapture(str(args.input))
    if not cap.isOpened():
        raise UserError(f"cannot open video {args.input}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    out_path = args.save_dir / (args.input.stem + "_det.mp4")
    writer = None
    n, total = 0, 0.0
    while True:
        ok, frame = cap.read()
        if not ok or (args.max_images and n >= args.max_images):
            break
        t = time.perf_counter()
        det = predictor(frame)
        total += time.perf_counter() - t
        canvas = draw(frame, det)
        if writer is None:
            writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"mp4v"), fps, canvas.shape[1::-1])
        writer.write(canvas)
        n += 1
    cap.release()
    if writer is not None:
        writer.release()
    print(f"{n} frames, {total:.2f} s inference, {n / max(total, 1e-9):.1f} FPS -> {out_path}")


def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logging()
    device = resolve_device(args.device)
    try:
        if args.weight.endswith(".onnx"):
            opts = list(args.opts) + [f"data.{k}={v}" for k, v in (("dataset", args.dataset), ("root", args.root)) if v]
            predictor = Predictor(args.weight, config=args.config, opts=opts, backend=args.backend,
                                  precision=args.precision, calib=args.calib, calib_size=args.calib_size)
            cfg = predictor.cfg
        else:
            cfg = run_config(args, args.weight)
            predictor = Predictor(args.weight, config=cfg, device=device, precision=args.precision,
                                  backend=args.backend, calib=args.calib, calib_size=args.calib_size)
    except (ValueError, FileNotFoundError) as e:  # the Predictor's errors name the file and the problem
        raise UserError(str(e)) from None

    def draw(image, det):
        return draw_detections(image, det["boxes"], det["labels"], det["scores"], predictor.class_names,
                               score_thresh=args.score_thresh)

    args.save_dir.mkdir(parents=True, exist_ok=True)
    show = args.show and display_available()
    if args.show and not show:
        print(f"--show: no display available here; pictures are saved to {args.save_dir}")
    if args.input is not None and args.input.suffix.lower() in VIDEO_EXTS:
        run_video(args, predictor, draw)
        return
    n, total = 0, 0.0
    for name, image in _iter_inputs(args, cfg):
        if args.max_images and n >= args.max_images:
            break
        t = time.perf_counter()
        det = predictor(image)
        dt = time.perf_counter() - t
        total += dt
        n += 1
        kept = int((det["scores"] >= args.score_thresh).sum())
        canvas = draw(image, det)
        out = args.save_dir / (Path(name).stem + ".jpg")
        cv2.imwrite(str(out), canvas)
        print(f"{name}: {kept} detections >= {args.score_thresh}, {dt * 1000:.1f} ms -> {out}")
        if show:
            cv2.imshow("YOLOF", canvas)
            if cv2.waitKey(0) & 0xFF in (ord("q"), 27):
                show = False
    if n == 0:
        raise UserError("no images were processed")
    print(f"{n} images, {total:.2f} s inference, {total / n * 1000:.1f} ms/image, {n / total:.1f} FPS")


if __name__ == "__main__":
    run_script(main)
