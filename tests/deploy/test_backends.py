"""Backends and precisions of the Predictor: OpenVINO fp32 reproduces PyTorch on real images, int8 keeps the
accuracy of a small trained quickstart model, combinations the CPU cannot run natively say so, and
tools/benchmark.py reports every backend in one table and one JSON file."""
from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
import torch

import deploy.backends
from data.build import build_dataset
from data.transforms import Compose
from deploy.accuracy import predictor_metrics
from deploy.backends import resolve_backend_precision
from deploy.compare import matched_fraction
from deploy.predictor import Predictor
from deploy.quantize import calibration_files
from tests.conftest import REPO
from tests.converted_checkpoint import images_of_different_shapes, write_converted_r50
from utils.precision import cpu_bf16_support

EXAMPLE = (320, 480)  # deploy.onnx_export's tracing example; the test images are resized to other sizes
TINY = REPO / "tests" / "fixtures" / "quickstart_tiny" / "model.pth"  # see its README.md
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def r50(tmp_path_factory):
    """(checkpoint, PyTorch predictor) of the converted seeded R50-C5 (score threshold 0.05, short side 256)."""
    ckpt = write_converted_r50(tmp_path_factory.mktemp("r50") / "r50.pth")
    return ckpt, Predictor(ckpt)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """opts that point the shipped tiny quickstart model at a fresh synthetic set: its 300 validation images are
    the quickstart's (the held-out split does not depend on num_train), 100 training images for calibration."""
    root = tmp_path_factory.mktemp("synthetic")
    opts = [f"data.root={root}", "data.synthetic.num_train=100"]
    predictor = Predictor(TINY, opts=opts)
    val = build_dataset(predictor.cfg, "val", is_train=False, transforms=Compose([]))
    return opts, predictor, val


def test_openvino_fp32_matches_pytorch_on_real_images(coco_tiny, r50):
    ckpt, predictor = r50
    openvino = Predictor(ckpt, backend="openvino")
    assert openvino.model_file.suffix == ".xml" and openvino.model_bytes > 100 * 2**20  # fp32 weights kept
    paths = images_of_different_shapes(coco_tiny, 3)
    sizes = {tuple(predictor.prepare(p)[0].shape[1:]) for p in paths}
    assert len(sizes) == 3 and EXAMPLE not in sizes  # three input sizes (dynamic H, W), none the export example's
    fraction, total = matched_fraction(predictor.predict(paths), openvino.predict(paths), iou_thresh=0.99,
                                       score_tol=1e-3)
    assert total >= 150, f"only {total} detections: the comparison would be vacuous"
    assert fraction >= 0.99, f"{fraction:.3f} of {total} detections matched"


def test_openvino_bf16_agrees_with_fp32_or_falls_back_in_one_line(coco_tiny, r50, caplog):
    ckpt, predictor = r50
    native, _ = cpu_bf16_support()
    with caplog.at_level(logging.WARNING, logger="deploy.backends"):
        bf16 = Predictor(ckpt, backend="openvino", precision="bf16")
    if not native:  # this CPU: one line, then fp32
        assert bf16.precision == "fp32" and len(caplog.records) == 1 and "no native bf16" in caplog.text
        return
    assert bf16.precision == "bf16" and not caplog.records
    paths = images_of_different_shapes(coco_tiny, 3)
    fraction, total = matched_fraction(predictor.predict(paths), bf16.predict(paths), iou_thresh=0.9,
                                       score_tol=0.05, min_score=0.3)
    assert total >= 30 and fraction >= 0.95, f"{fraction:.3f} of {total} fp32 detections above 0.3 matched in bf16"


def test_combinations_that_do_not_exist_or_do_not_run_natively(monkeypatch, caplog):
    for backend, precision, message in (("onnxruntime", "bf16", "runs precision fp32, not bf16"),
                                        ("onnxruntime", "int8", r"not int8 \(int8: backend openvino\)"),
                                        ("pytorch", "int8", "use backend openvino"),
                                        ("openvino", "fp16", "not fp16"),
                                        ("tensorrt", "fp32", "unknown backend"),
                                        ("openvino", "int4", "unknown precision")):
        with pytest.raises(ValueError, match=message):
            resolve_backend_precision(backend, precision, CPU)
    # a CPU without native bf16 / int8 instructions (CI's may have neither): one line each
    monkeypatch.setattr(deploy.backends, "cpu_bf16_support", lambda: (False, "no avx512_bf16 here"))
    monkeypatch.setattr(deploy.backends, "cpu_int8_support", lambda: (False, "no avx512_vnni here"))
    with caplog.at_level(logging.WARNING, logger="deploy.backends"):
        assert resolve_backend_precision("openvino", "bf16", CPU) == "fp32"
        assert len(caplog.records) == 1 and "no native bf16 (no avx512_bf16 here): openvino runs in fp32" in caplog.text
        caplog.clear()
        assert resolve_backend_precision("openvino", "int8", CPU) == "int8"  # runs anyway, emulated
        assert len(caplog.records) == 1 and "no int8 dot-product instructions (no avx512_vnni here): openvino runs " \
            "int8 anyway" in caplog.text


def test_int8_keeps_ap50_within_two_points_of_fp32(synthetic):
    """int8 runs on every CPU (emulated without VNNI / AMX int8), so this never skips."""
    opts, fp32, val = synthetic
    reference = predictor_metrics(fp32, val, "synthetic")
    assert len(val) == 300 and reference["AP50"] >= 0.2, f"fp32 AP50 {reference['AP50']:.3f}: a vacuous comparison"
    int8 = Predictor(TINY, opts=opts, backend="openvino", precision="int8")  # 100 images of the training split
    assert int8.precision == "int8" and int8.model_file.suffix == ".xml"
    assert int8.model_bytes < 0.6 * Predictor(TINY, opts=opts, backend="openvino").model_bytes  # int8 weights
    got = predictor_metrics(int8, val, "synthetic")
    assert abs(got["AP50"] - reference["AP50"]) <= 0.02, (got["AP50"], reference["AP50"])
    assert abs(got["AP"] - reference["AP"]) <= 0.02, (got["AP"], reference["AP"])


def test_calibration_images_come_from_a_folder_or_the_training_split(coco_tiny, synthetic, tmp_path):
    _, fp32, _ = synthetic
    files = calibration_files(fp32.cfg, coco_tiny / "val2017", n=3)
    everything = sorted((coco_tiny / "val2017").glob("*.jpg"))
    assert files == [everything[0], everything[2], everything[4]]  # spread over the sorted folder
    assert calibration_files(fp32.cfg, coco_tiny / "val2017", n=50) == everything  # at most the folder
    train = calibration_files(fp32.cfg, None, n=4)
    assert [p.parent.name for p in train] == ["train"] * 4 and len(set(train)) == 4
    with pytest.raises(FileNotFoundError, match="no such folder"):
        calibration_files(fp32.cfg, tmp_path / "missing")
    with pytest.raises(ValueError, match="no images"):
        calibration_files(fp32.cfg, tmp_path)


def test_benchmark_prints_a_row_per_backend_and_writes_json(synthetic, tmp_path):
    opts, _, _ = synthetic
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "tools.benchmark", "--weight", str(TINY), "--opts", *opts,
                           "--data", "synthetic:val", "--backends", "pytorch,onnxruntime,openvino",
                           "--precisions", "fp32,int8", "--calib_size", "8", "--max_images", "40", "--warmup", "1",
                           "--repeats", "2", "--json", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    got = [(r[0], r[1].rstrip("*")) for r in rows if r and r[0] in ("pytorch", "onnxruntime", "openvino")]
    assert got == [("pytorch", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "int8")]
    report = json.loads(out.read_text())
    assert report["images_scored"] == 40 and report["input_size"] == [256, 256] and report["body_best_ms"] > 0
    assert report["machine"]["cpu"] and report["machine"]["threads"] >= 1
    keys = {"backend", "precision", "native", "ms_per_image", "ratio_to_body_best", "AP", "AP50", "AP_diff",
            "export_s", "size_MiB"}
    for row in report["rows"]:
        assert set(row) == keys
        assert row["ms_per_image"] > 0 and row["ratio_to_body_best"] > 0 and 0 <= row["AP50"] <= 100
        assert row["size_MiB"] > 0 and (row["export_s"] is None) == (row["backend"] == "pytorch")
    by = {(r["backend"], r["precision"]): r for r in report["rows"]}
    assert by[("pytorch", "fp32")]["AP_diff"] == 0
    assert by[("onnxruntime", "fp32")]["AP"] == pytest.approx(by[("pytorch", "fp32")]["AP"], abs=0.1)
    assert by[("openvino", "fp32")]["AP"] == pytest.approx(by[("pytorch", "fp32")]["AP"], abs=0.1)


def test_test_py_runs_openvino_int8_calibrated_on_a_folder(coco_tiny, synthetic, tmp_path):
    opts, _, _ = synthetic
    image = sorted((coco_tiny / "val2017").glob("*.jpg"))[0]
    proc = subprocess.run([sys.executable, "test.py", "--weight", str(TINY), "--input", str(image), "--backend",
                           "openvino", "--precision", "int8", "--calib", str(coco_tiny / "val2017"), "--calib_size",
                           "4", "--save_dir", str(tmp_path / "vis"), "--opts", *opts], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"int8 calibration on 4 images from {coco_tiny / 'val2017'}" in proc.stderr and "FPS" in proc.stdout
    assert (tmp_path / "vis" / (image.stem + ".jpg")).is_file()
