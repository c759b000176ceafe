"""ONNX export: the file passes onnx.checker and ONNX Runtime reproduces the PyTorch detections on real images."""
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from config import config_to_dict, load_config
from deploy.compare import matched_fraction
from deploy.onnx_export import export_onnx, read_metadata
from deploy.predictor import Predictor
from models import build_model
from tests.conftest import REPO
from tests.converted_checkpoint import images_of_different_shapes, write_converted_r50
from utils.checkpoint import save_checkpoint

EXAMPLE = (320, 480)  # the tracing example; the test images are resized to other sizes (short side 256)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(checkpoint, PyTorch predictor, raw .onnx, full .onnx) of the converted R50-C5."""
    folder = tmp_path_factory.mktemp("onnx")
    ckpt = write_converted_r50(folder / "r50.pth")
    predictor = Predictor(ckpt)
    meta = {"config": config_to_dict(predictor.cfg), "class_names": None}
    raw = export_onnx(predictor.plain_model, folder / "raw.onnx", variant="raw", example_size=EXAMPLE, metadata=meta)
    full = export_onnx(predictor.plain_model, folder / "full.onnx", variant="full", example_size=EXAMPLE)
    return ckpt, predictor, raw, full


def test_exported_files_are_valid_with_dynamic_axes_and_metadata(exported):
    _, predictor, raw, full = exported
    for path, outputs in ((raw, ["cls_logits", "bbox_reg"]), (full, ["boxes", "scores", "labels", "batch_index"])):
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto, full_check=True)
        dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
        assert dims == ["batch", 3, "height", "width"]
        assert [o.name for o in proto.graph.output] == outputs
    meta = read_metadata(raw)
    assert meta["variant"] == "raw" and meta["config"]["model"]["num_classes"] == 80


def test_onnxruntime_raw_graph_matches_pytorch_on_real_images(coco_tiny, exported):
    _, predictor, raw, _ = exported
    paths = images_of_different_shapes(coco_tiny, 3)
    sizes = {tuple(predictor.prepare(p)[0].shape[1:]) for p in paths}
    assert len(sizes) == 3 and EXAMPLE not in sizes  # three input sizes, none the export example's
    onnx_predictor = Predictor(raw, backend="onnxruntime")
    fraction, total = matched_fraction(predictor.predict(paths), onnx_predictor.predict(paths),
                                       iou_thresh=0.99, score_tol=1e-3)
    assert total >= 150, f"only {total} detections: the comparison would be vacuous"
    assert fraction >= 0.99, f"{fraction:.3f} of {total} detections matched"


def test_onnxruntime_full_graph_matches_pytorch_post_processing(coco_tiny, exported):
    _, predictor, _, full = exported
    session = ort.InferenceSession(str(full), providers=["CPUExecutionProvider"])
    paths = images_of_different_shapes(coco_tiny, 3)
    refs, gots = [], []
    for p in paths:
        x, _ = predictor.prepare(p)
        with torch.no_grad():  # boxes in the input image's pixels (no output size): what the graph returns
            refs.append({k: v.numpy() for k, v in predictor.plain_model([x])[0].items()})
        boxes, scores, labels, batch_index = session.run(None, {"images": x[None].float().numpy()})
        assert (batch_index == 0).all()
        gots.append({"boxes": boxes, "scores": scores, "labels": labels})
    fraction, total = matched_fraction(refs, gots, iou_thresh=0.99, score_tol=1e-3)
    assert total >= 150 and fraction >= 0.99, f"{fraction:.3f} of {total} matched"
    # a batch of two: each image gets its own max_detections and its own batch_index
    x, _ = predictor.prepare(paths[0])
    batch = torch.stack([x, x.flip(-1)]).float().numpy()
    boxes, scores, labels, batch_index = session.run(None, {"images": batch})
    first = batch_index == 0
    assert first.sum() == len(gots[0]["scores"]) and 0 < (~first).sum() <= predictor.plain_model.max_detections
    np.testing.assert_allclose(np.sort(scores[first]), np.sort(gots[0]["scores"]), atol=1e-5)


def test_export_tool_and_test_py_run_onnxruntime(coco_tiny, tmp_path):
    """The command lines on a small random model: export, then draw detections through ONNX Runtime."""
    small = {"model.backbone.width_mult": 0.25, "model.encoder.channels": 32, "model.encoder.mid_channels": 8,
             "model.test.score_thresh": 0.0, "data.test_min_size": 128, "data.test_max_size": 192}
    cfg = load_config(REPO / "config/small_cpu.yaml", small)
    torch.manual_seed(0)
    ckpt = tmp_path / "small.pth"
    save_checkpoint(ckpt, {"model": build_model(cfg).state_dict(), "config": config_to_dict(cfg),
                           "class_names": [f"c{i}" for i in range(cfg.model.num_classes)]})
    out = tmp_path / "small.onnx"
    proc = subprocess.run([sys.executable, "tools/export_onnx.py", "--weight", str(ckpt), "--out", str(out),
                           "--size", "128", "160"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "onnx.checker passed" in proc.stdout and "max |difference|" in proc.stdout
    diff = float(proc.stdout.split("max |difference|")[1].split()[0])
    assert diff < 1e-3
    assert read_metadata(out)["class_names"][0] == "c0"
    image = sorted((coco_tiny / "val2017").glob("*.jpg"))[0]
    proc = subprocess.run([sys.executable, "test.py", "--weight", str(out), "--backend", "onnxruntime", "--input",
                           str(image), "--save_dir", str(tmp_path / "vis"), "--score_thresh", "0.0"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "FPS" in proc.stdout
    assert cv2.imread(str(tmp_path / "vis" / (image.stem + ".jpg"))).shape == cv2.imread(str(image)).shape
    proc = subprocess.run([sys.executable, "test.py", "--weight", str(out), "--input", str(image)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "backend='onnxruntime'" in proc.stderr and "Traceback" not in proc.stderr
