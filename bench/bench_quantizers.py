"""int8 quantizers compared: NNCF (what deploy/quantize.py uses) against ONNX Runtime's quantize_static.

    python -m bench.bench_quantizers --weight runs/quickstart/last.pth --data val            # accuracy + speed
    python -m bench.bench_quantizers --weight r50.pth --data none --size 800 1216 --calib DIR --calib_size 20

Every variant quantizes the same exported raw ONNX graph, calibrated on the same --calib_size images
(the config's training split, or --calib), with the box-regression and objectness convolutions kept
in fp32, and runs on the runtime(s) named in its row:

* nncf -> openvino: nncf.quantize of the OpenVINO model, preset MIXED (deploy/quantize.py);
* nncf(onnx) -> onnxruntime: the same on the ONNX model (a QDQ graph);
* ort conv -> onnxruntime / openvino: quantize_static, QDQ, per-channel int8 weights, uint8 activations,
  convolutions only, MinMax or Percentile calibration;
* ort default -> onnxruntime: quantize_static with its default op types (element-wise ops too).

Columns: graph ms (the raw graph alone on one --size input, median of --repeats round-robin calls after
one warm-up, no pre- or post-processing), and AP / AP50 on the first --max_images images of --data.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch

from data.build import build_dataset
from data.transforms import Compose
from deploy.accuracy import predictor_metrics
from deploy.backends import OnnxRuntimeRunner, OpenVINORunner
from deploy.predictor import Predictor
from deploy.quantize import KEEP_FLOAT, calibration_files, quantize_openvino
from deploy.timing import interleaved_medians


def ort_quantize(onnx_file: Path, out: Path, inputs, *, conv_only: bool, method: str) -> Path:
    import onnx  # optional
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,  # optional
                                          quant_pre_process, quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"images": x} for x in inputs])

        def get_next(self):
            return next(self.items, None)

    pre = out.with_name(out.stem + "_pre.onnx")
    quant_pre_process(str(onnx_file), str(pre))
    keep = [n.name for n in onnx.load(str(pre)).graph.node if "bbox_pred" in n.name or "object_pred" in n.name]
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=keep,
                    op_types_to_quantize=["Conv"] if conv_only else None,
                    calibrate_method=getattr(CalibrationMethod, method))
    return out


def nncf_onnx(onnx_file: Path, out: Path, inputs) -> Path:
    import nncf  # optional
    import onnx  # optional

    model = nncf.quantize(onnx.load(str(onnx_file)), nncf.Dataset(list(inputs), lambda x: {"images": x}),
                          preset=nncf.QuantizationPreset.MIXED, subset_size=len(inputs),
                          ignored_scope=nncf.IgnoredScope(patterns=[KEEP_FLOAT], validate=False))
    onnx.save(model, str(out))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weight", required=True)
    p.add_argument("--opts", nargs="*", default=[])
    p.add_argument("--data", default="val", help="a split of the config's dataset, or none (speed only)")
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="timed input (default: test size)")
    p.add_argument("--calib", default=None)
    p.add_argument("--calib_size", type=int, default=100)
    p.add_argument("--max_images", type=int, default=300)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", type=Path, default=Path("/tmp/bench_quantizers"))
    p.add_argument("--no_percentile", action="store_true",
                   help="skip Percentile calibration (its histograms of every activation need many GB at 800x1216; "
                        "its graph is the MinMax one, so it runs at the same speed)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    base = Predictor(args.weight, opts=args.opts, backend="onnxruntime", export_dir=args.out)
    onnx_file = base.model_file
    inputs = [base.prepare(f)[0][None].float().numpy()
              for f in calibration_files(base.cfg, args.calib, args.calib_size)]
    d = base.cfg.data
    h, w = args.size or (d.test_min_size, d.test_max_size)
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, h, w)).astype(np.float32)
    ov_int8 = quantize_openvino(onnx_file, args.out / "nncf.xml", inputs)
    ort_conv = ort_quantize(onnx_file, args.out / "ort_conv.onnx", inputs, conv_only=True, method="MinMax")
    ort_pct = None if args.no_percentile else ort_quantize(onnx_file, args.out / "ort_conv_pct.onnx", inputs,
                                                           conv_only=True, method="Percentile")
    ort_all = ort_quantize(onnx_file, args.out / "ort_all.onnx", inputs, conv_only=False, method="MinMax")
    nncf_ort = nncf_onnx(onnx_file, args.out / "nncf_onnx.onnx", inputs)
    runners = {
        "fp32 -> onnxruntime": OnnxRuntimeRunner(onnx_file, "fp32", threads),
        "fp32 -> openvino": OpenVINORunner(onnx_file, "fp32", threads),
        "nncf -> openvino": OpenVINORunner(ov_int8, "int8", threads),
        "nncf(onnx) -> onnxruntime": OnnxRuntimeRunner(nncf_ort, "int8", threads),
        "ort conv minmax -> onnxruntime": OnnxRuntimeRunner(ort_conv, "int8", threads),
        "ort conv minmax -> openvino": OpenVINORunner(ort_conv, "int8", threads),
        "ort conv percentile -> onnxruntime": ort_pct and OnnxRuntimeRunner(ort_pct, "int8", threads),
        "ort default -> onnxruntime": OnnxRuntimeRunner(ort_all, "int8", threads),
    }
    runners = {k: r for k, r in runners.items() if r is not None}
    times = interleaved_medians({k: (lambda r=r: r(x)) for k, r in runners.items()}, torch.device("cpu"),
                                warmup=1, repeats=args.repeats)
    dataset = None
    if args.data != "none":
        dataset = build_dataset(base.cfg, {"val": d.val_split}.get(args.data, args.data), is_train=False,
                                transforms=Compose([]))
    print(f"threads {threads}, graph input 1x3x{h}x{w}, calibration {len(inputs)} images, "
          f"scored {0 if dataset is None else min(args.max_images, len(dataset))} images")
    print(f"{'variant':36s} {'graph ms':>9s} {'AP':>6s} {'AP50':>6s}")
    for name, runner in runners.items():
        ap = ap50 = "-"
        if dataset is not None:
            base.runner = runner
            m = predictor_metrics(base, dataset, d.dataset, max_images=args.max_images)
            ap, ap50 = f"{100 * m['AP']:.2f}", f"{100 * m['AP50']:.2f}"
        print(f"{name:36s} {times[name] * 1000:9.1f} {ap:>6s} {ap50:>6s}", flush=True)


if __name__ == "__main__":
    main()
