"""deploy.Predictor: the same detections as the plain model in eval mode, every input kind, clear errors."""
from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import torch

from config import load_config
from deploy.compare import matched_fraction
from utils.precision import cpu_bf16_support, resolve_precision
from deploy.predictor import Predictor
from models import build_model
from tests.conftest import REPO
from tests.converted_checkpoint import images_of_different_shapes, write_converted_r50
from utils.checkpoint import load_model_weights

BF16_OK, BF16_REASON = cpu_bf16_support()
BF16_DEVICE = ("cuda" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else
               "cpu" if BF16_OK else None)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_converted_r50(tmp_path_factory.mktemp("ckpt") / "r50_converted.pth")


@pytest.fixture(scope="module")
def predictor(checkpoint):
    return Predictor(checkpoint)


@pytest.fixture(scope="module")
def cheap_predictor():
    """Random weights, quickstart size: enough to check input handling."""
    torch.manual_seed(0)
    return Predictor(load_config(REPO / "config/small_cpu.yaml", {"model.test.score_thresh": 0.0}))


def test_fused_predictor_matches_the_plain_model_in_eval_mode(coco_tiny, checkpoint, predictor):
    paths = images_of_different_shapes(coco_tiny, 4)
    plain = build_model(predictor.cfg)
    load_model_weights(plain, checkpoint)
    plain.eval()
    references = []
    with torch.no_grad():
        for p in paths:
            x, orig = predictor.prepare(p)  # the test transform, checked against eval.py's in the next test
            out = plain([x], output_sizes=[orig])[0]
            references.append({k: v.numpy() for k, v in out.items()})
    got = predictor.predict(paths)
    fraction, total = matched_fraction(references, got, iou_thresh=0.99, score_tol=1e-3)
    assert total >= 200, f"only {total} reference detections: the comparison would be vacuous"
    assert fraction >= 0.99, f"{fraction:.3f} of {total} detections matched"
    for p, det in zip(paths, got):  # boxes are in the original image's pixels
        h, w = cv2.imread(str(p)).shape[:2]
        assert det["boxes"].dtype == np.float32 and det["labels"].dtype == np.int64
        assert det["boxes"][:, [0, 2]].max() <= w and det["boxes"][:, [1, 3]].max() <= h
        assert det["boxes"][:, 2:].max() > 0.5 * min(h, w)  # not left in the resized image's pixels


def test_prepare_is_the_eval_datasets_test_transform(coco_tiny, predictor):
    from data.build import build_dataset

    cfg = predictor.cfg
    from config.loader import config_from_dict
    from config import config_to_dict

    data = config_to_dict(cfg)
    data["data"].update(dataset="coco", root=str(coco_tiny))
    ds = build_dataset(config_from_dict(data), "val2017", is_train=False)
    image, target = ds[0]
    x, orig = predictor.prepare(ds.get_file_name(0))
    assert torch.equal(x, image)
    assert tuple(orig) == tuple(int(v) for v in target["orig_size"])


def test_every_input_kind_gives_the_same_detections(coco_tiny, cheap_predictor):
    path = sorted((coco_tiny / "val2017").glob("*.jpg"))[0]
    bgr = cv2.imread(str(path))
    p = cheap_predictor
    want = p.predict(path)
    assert len(want["scores"]) > 0
    inputs = [(bgr, "BGR"), (np.ascontiguousarray(bgr[:, :, ::-1]), "RGB"),
              (torch.from_numpy(bgr).permute(2, 0, 1), "BGR")]
    for image, fmt in inputs:
        got = p.predict(image, input_format=fmt)
        for k in ("boxes", "scores", "labels"):
            np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-4)
    # float 0-255 pixels: resized in float (no rounding to uint8), so equal up to that rounding
    fraction, total = matched_fraction([want], [p.predict(bgr.astype(np.float32))])
    assert total > 0 and fraction >= 0.99
    both = p.predict([path, bgr])
    assert isinstance(both, list) and len(both) == 2 and np.array_equal(both[1]["labels"], want["labels"])


def test_bad_inputs_get_a_one_line_error_naming_the_problem(tmp_path, cheap_predictor):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    cases = [(text, ValueError, "notes.jpg: not an image file"),
             (tmp_path / "missing.png", FileNotFoundError, "missing.png: no such image file"),
             (np.zeros((0, 0, 3), np.uint8), ValueError, "empty image array"),
             (np.zeros((40, 60), np.uint8), ValueError, "grayscale image array of shape (40, 60)"),
             (np.zeros((40, 60, 1), np.uint8), ValueError, "grayscale image array"),
             (np.zeros((40, 60, 5), np.uint8), ValueError, "expected (H, W, 3), or (H, W, 4) with alpha"),
             (torch.zeros(40, 60, 3), ValueError, "(3, H, W) channels first"),
             (np.full((40, 60, 3), -0.5, np.float32), ValueError, "negative values (min -0.5)"),
             (np.full((40, 60, 3), 1000, np.int32), ValueError, "int32 image array with values up to 1000"),
             (np.full((40, 60, 3), np.nan, np.float32), ValueError, "NaN or infinite"),
             (np.zeros((40, 60, 3), bool), TypeError, "dtype bool"),
             (42, TypeError, "got int")]
    for bad, error, message in cases:
        with pytest.raises(error) as info:
            cheap_predictor.predict(bad)
        assert message in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="input_format must be one of BGR, RGB"):
        cheap_predictor.predict(np.zeros((40, 60, 3), np.uint8), input_format="YUV")
    with pytest.raises(ValueError, match="unknown backend"):
        Predictor(load_config(REPO / "config/small_cpu.yaml"), backend="tensorrt")


def test_pixels_in_other_ranges_and_alpha_are_converted_with_one_line(coco_tiny, cheap_predictor, caplog):
    """float 0-1 (torchvision's convention) and uint16 images are scaled to 0-255, alpha is dropped: the same
    detections as the uint8 image, each conversion logged once, not once per image."""
    path = sorted((coco_tiny / "val2017").glob("*.jpg"))[0]
    bgr = cv2.imread(str(path))
    p = cheap_predictor
    want = p.predict(bgr)
    assert len(want["scores"]) > 0
    alpha = np.full(bgr.shape[:2] + (1,), 255, np.uint8)
    cases = [(bgr.astype(np.float32) / 255, "scaled by 255", 0.99),
             (bgr.astype(np.uint16) * 257, "uint16 image: scaled from 0-65535 to 0-255", 0.99),
             (np.concatenate([bgr, alpha], axis=2), "alpha channel dropped", 1.0),
             (torch.from_numpy(np.concatenate([bgr, alpha], axis=2)).permute(2, 0, 1), "alpha channel dropped", 1.0)]
    p._notes.clear()
    seen = set()
    for image, note, least in cases:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="deploy.predictor"):
            got = [p.predict(image), p.predict(image)]
        fraction, total = matched_fraction([want, want], got)  # float pixels: equal up to the uint8 rounding
        assert total > 0 and fraction >= least, (note, fraction)
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == (0 if note in seen else 1) and all(note in line for line in lines), lines
        seen.add(note)
    # a float image already in 0-255 is taken as it is, silently
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="deploy.predictor"):
        p.predict(bgr.astype(np.float32))
    assert not caplog.records


def test_precision_names_and_fallback(caplog):
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("int4", torch.device("cpu"))
    with pytest.raises(ValueError, match="int8 is a quantized graph: use backend openvino"):
        resolve_precision("int8", torch.device("cpu"))
    with caplog.at_level(logging.WARNING):
        got = resolve_precision("bf16", torch.device("cpu"))
    if BF16_OK:
        assert got == "bf16"
    else:  # this CPU: says so in one line and runs fp32
        assert got == "fp32" and "no native bf16" in caplog.text and len(caplog.records) == 1


@pytest.mark.skipif(BF16_DEVICE is None, reason="needs bf16 hardware, a CUDA GPU with bf16 or a CPU with native "
                    f"bf16; this machine has no GPU and its CPU has no native bf16 ({BF16_REASON})")
def test_bf16_predictor_agrees_with_fp32(coco_tiny, checkpoint):
    paths = images_of_different_shapes(coco_tiny, 4)
    fp32 = Predictor(checkpoint, device=BF16_DEVICE)
    bf16 = Predictor(checkpoint, device=BF16_DEVICE, precision="bf16")
    assert bf16.precision == "bf16"
    fraction, total = matched_fraction(fp32.predict(paths), bf16.predict(paths), iou_thresh=0.9,
                                       score_tol=0.05, min_score=0.3)
    assert total >= 50, f"only {total} fp32 detections above 0.3"
    assert fraction >= 0.95, f"{fraction:.3f} of {total} fp32 detections above 0.3 matched in bf16"
