"""ImageNet starts in the official formats: Detectron/Caffe2 pickles, torchvision state dicts, and the presets.

The Caffe2 pickles are built here in the model-zoo layout (Caffe2 names, ``_momentum``
twins, ``conv1_b`` and ``fc1000_*``, with and without a ``blobs`` level, protocol 2 as
Python 2 wrote them), so the tests need no download.
"""
from __future__ import annotations

import importlib.util
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from torchvision.ops import FrozenBatchNorm2d

from config import load_config
from config.loader import ConfigError
from models import build_model
from models.backbone import ResNetBackbone
from models.pretrained import WeightsError, caffe2_to_torchvision, load_backbone_weights
from utils.checkpoint import PickleRefused
from tests.conftest import GOLDEN, REPO

PRESETS = {  # our preset -> official zoo model
    "yolof_r50_c5_1x": "yolof.res50.C5.1x",
    "yolof_r50_dc5_1x": "yolof.res50.DC5.1x",
    "yolof_r101_c5_1x": "yolof.res101.C5.1x",
    "yolof_r101_dc5_1x": "yolof.res101.DC5.1x",
    "yolof_x101_64x4d_c5_1x": "yolof.X101.64x4d.C5.1x",
}


def caffe2_blobs(backbone: ResNetBackbone, seed: int = 0) -> dict[str, np.ndarray]:
    """Model-zoo blobs for ``backbone``: every Caffe2 name it uses, plus the unused ones the real files carry."""
    rng = np.random.default_rng(seed)
    blobs = {"conv1_b": rng.standard_normal(64).astype(np.float32),
             "fc1000_w": rng.standard_normal((1000, backbone.out_channels)).astype(np.float32),
             "fc1000_b": rng.standard_normal(1000).astype(np.float32)}
    names = ["conv1_w", "res_conv1_bn_s", "res_conv1_bn_b"]
    for stage, layer in enumerate((backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4), start=2):
        for i, block in enumerate(layer):
            branches = ["2a", "2b", "2c"] + (["1"] if block.downsample is not None else [])
            names += [f"res{stage}_{i}_branch{b}_{k}" for b in branches for k in ("w", "bn_s", "bn_b")]
    own = backbone.state_dict()
    for name in names:
        shape = own[caffe2_to_torchvision(name)].shape
        scale = 0.5 if name.endswith("_s") else 0.1
        blobs[name] = (rng.standard_normal(shape) * scale + (1.0 if name.endswith("_s") else 0.0)).astype(np.float32)
    for name in list(blobs):
        blobs[name + "_momentum"] = np.zeros_like(blobs[name])
    return blobs


def write_pkl(path, blobs: dict, with_blobs_level: bool) -> None:
    obj = {"blobs": blobs, "__preserve__": False} if with_blobs_level else blobs
    path.write_bytes(pickle.dumps(obj, protocol=2))


@pytest.fixture(scope="module")
def r50() -> ResNetBackbone:
    return ResNetBackbone("resnet50", style="caffe", freeze_at=2, norm="frozen_bn")


@pytest.mark.parametrize("with_blobs_level", [False, True])
def test_caffe2_pickle_maps_every_blob_and_reports_the_unused(tmp_path, r50, with_blobs_level):
    blobs = caffe2_blobs(r50)
    path = tmp_path / "R-50.pkl"
    write_pkl(path, blobs, with_blobs_level)
    info = load_backbone_weights(r50, path)

    used = {n for n in blobs if caffe2_to_torchvision(n) is not None}
    assert len(used) == 3 + 3 * 3 * 16 + 3 * 4  # stem + 16 bottlenecks x 3 convs + 4 shortcuts, each w/s/b
    expected_unused = {"conv1_b", "fc1000_w", "fc1000_b"} | {n for n in blobs if n.endswith("_momentum")}
    assert set(info["unused"]) == expected_unused
    state = r50.state_dict()
    for name in used:
        assert torch.equal(state[caffe2_to_torchvision(name)], torch.from_numpy(blobs[name])), name
    params = {k for k, _ in r50.named_parameters()} | {k for k in state if k.endswith((".weight", ".bias"))}
    assert params <= set(info["loaded"])  # every weight and affine of the backbone came from the file


def test_frozen_norms_compute_scale_times_x_plus_bias(tmp_path, r50):
    blobs = caffe2_blobs(r50, seed=1)
    write_pkl(tmp_path / "R-50.pkl", blobs, with_blobs_level=False)
    load_backbone_weights(r50, tmp_path / "R-50.pkl")
    x = torch.randn(2, 2048, 3, 3, generator=torch.Generator().manual_seed(0)) * 10
    worst = 0.0
    norms = [(n, m) for n, m in r50.named_modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(norms) == 53
    for name, norm in norms:
        c = norm.weight.numel()
        s, b = norm.weight.view(1, c, 1, 1), norm.bias.view(1, c, 1, 1)
        assert torch.all(norm.running_mean == 0) and torch.allclose(norm.running_var, torch.full((c,), 1 - norm.eps))
        xi = x[:, :c]
        worst = max(worst, (norm(xi) - (s * xi + b)).abs().max().item())
    print(f"max |frozen_norm(x) - (s * x + b)| over 53 norms: {worst:.3g}")
    assert worst < 1e-5


def test_caffe2_pickle_into_the_trainable_bn_backbone(tmp_path):
    """norm=bn gets the same affine-only statistics (mean 0, var 1 - eps)."""
    bb = ResNetBackbone("resnet50", style="caffe", freeze_at=0, norm="bn")
    write_pkl(tmp_path / "R-50.pkl", caffe2_blobs(bb), with_blobs_level=True)
    load_backbone_weights(bb, tmp_path / "R-50.pkl")
    assert torch.all(bb.bn1.running_mean == 0)
    assert torch.allclose(bb.layer3[2].bn2.running_var, torch.full((256,), 1 - bb.bn1.eps))


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_would_run_code_is_refused_before_it_runs(tmp_path, r50):
    marker = tmp_path / "pwned"
    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps({"blobs": {"conv1_w": _RunsCode(marker)}}, protocol=2))
    with pytest.raises(PickleRefused, match=r"refused: it would run code \(global (posix|os)\.system\)"):
        load_backbone_weights(r50, path)
    assert not marker.exists()


def test_wrong_shape_and_wrong_depth_name_the_key(tmp_path, r50):
    blobs = caffe2_blobs(r50)
    blobs["res4_3_branch2b_w"] = blobs["res4_3_branch2b_w"][:, :, :1, :1].copy()
    write_pkl(tmp_path / "bad.pkl", blobs, with_blobs_level=False)
    with pytest.raises(WeightsError, match=r"layer3\.3\.conv2\.weight has shape \(256, 256, 1, 1\)"):
        load_backbone_weights(r50, tmp_path / "bad.pkl")
    write_pkl(tmp_path / "R-50.pkl", caffe2_blobs(r50), with_blobs_level=False)
    r101 = ResNetBackbone("resnet101", style="caffe")
    with pytest.raises(WeightsError, match=r"backbone entries are not in the file .*layer3\.6"):
        load_backbone_weights(r101, tmp_path / "R-50.pkl")


def test_missing_file_says_where_it_is_published(tmp_path, r50):
    with pytest.raises(WeightsError, match=r"R-50\.pkl not found: download it from "
                                           r"https://dl\.fbaipublicfiles\.com/detectron2/ImageNetPretrained/MSRA/R-50"
                                           r"\.pkl .* and put it at"):
        load_backbone_weights(r50, tmp_path / "R-50.pkl")


def test_torchvision_state_dict_loads_into_the_pytorch_style_preset(tmp_path):
    tv = torchvision.models.resnet50(weights=None)
    torch.save(tv.state_dict(), tmp_path / "resnet50-0676ba61.pth")
    cfg = load_config(REPO / "config/yolof_r50_c5_1x_torchvision.yaml",
                      [f"model.backbone.weights={tmp_path / 'resnet50-0676ba61.pth'}"])
    model = build_model(cfg)
    info = load_backbone_weights(model, tmp_path / "resnet50-0676ba61.pth")
    assert info["unused"] == ["fc.bias", "fc.weight"]
    ours = model.backbone.state_dict()
    for k, v in tv.state_dict().items():
        if not k.startswith("fc.") and not k.endswith("num_batches_tracked"):  # FrozenBN keeps no counter
            assert torch.equal(ours[k], v), k
    assert model.backbone.layer2[0].conv2.stride == (2, 2)  # pytorch style: the stride on the 3x3 conv


@pytest.mark.parametrize("overrides, keys", [
    (["model.backbone.weights=imagenet"], "'model.backbone.style'"),
    (["model.backbone.weights=imagenet", "model.backbone.style=pytorch"], "'model.input_format'"),
    (["model.backbone.weights=weights/R-50.pkl", "model.input_format=RGB"], "'model.input_format'"),
    (["model.backbone.weights=weights/R-50.pkl", "model.backbone.style=pytorch"], "'model.backbone.style'"),
    (["model.backbone.weights=weights/X-101-64x4d.pkl"], "'model.backbone.name'"),
    (["model.backbone.weights=weights/R-50.pkl", "model.pixel_std=[58.4, 57.1, 57.4]"], "'model.pixel_std'"),
])
def test_combinations_that_cannot_work_fail_validation_naming_the_keys(overrides, keys):
    with pytest.raises(ConfigError, match=f"'model.backbone.weights' and {keys}"):
        load_config(REPO / "config/yolof_r50_c5_1x.yaml", overrides)


def test_torchvision_preset_with_bgr_fails_validation():
    with pytest.raises(ConfigError, match="'model.input_format'"):
        load_config(REPO / "config/yolof_r50_c5_1x_torchvision.yaml", ["model.input_format=BGR"])


def _zoo() -> dict:
    return json.loads((GOLDEN / "official_zoo.json").read_text())["models"]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_have_the_official_parameter_counts_and_imagenet_file(preset):
    official = _zoo()[PRESETS[preset]]
    cfg = load_config(REPO / "config" / f"{preset}.yaml")
    model = build_model(cfg)  # never needs the ImageNet file
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert (total, trainable) == (official["num_parameters_total"], official["num_parameters_trainable"])
    assert cfg.model.backbone.weights == "weights/" + official["config"]["MODEL.WEIGHTS"].rsplit("/", 1)[-1]


def _make_weights_module():
    spec = importlib.util.spec_from_file_location("make_weights_generic", GOLDEN / "make_weights_generic.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def official_cell_anchors(anchor_cfg: dict) -> torch.Tensor:
    """cvpods' cell anchors: size-major over (size, aspect ratio h/w), centred, area size**2."""
    rows = []
    for size in anchor_cfg["SIZES"][0]:
        for ratio in anchor_cfg["ASPECT_RATIOS"][0]:
            w = (size * size / ratio) ** 0.5
            h = ratio * w
            rows.append([-w / 2, -h / 2, w / 2, h / 2])
    return torch.tensor(rows)  # X101: 15 rows (ratios 0.5, 1, 2) for its 5-anchor head


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_converter_detects_and_maps_seeded_official_weights(tmp_path, preset):
    from tools.convert_official import convert_checkpoint, convert_key

    official_name = PRESETS[preset]
    entry = _zoo()[official_name]
    layout = [e for e in entry["state_dict"] if not e[0].startswith("anchor_generator.")]
    official = _make_weights_module().make(layout, entry["config"], seed=3)
    official["anchor_generator.cell_anchors.0"] = official_cell_anchors(entry["config"]["MODEL.ANCHOR_GENERATOR"])
    src = tmp_path / "official.pth"
    torch.save({"model": official}, src)
    info = convert_checkpoint(src, tmp_path / "ours.pth")
    assert info["preset"] == preset
    ours = torch.load(tmp_path / "ours.pth", weights_only=True)
    model = build_model(load_config(REPO / "config" / f"{preset}.yaml"))
    model.load_state_dict(ours["model"], strict=True)
    state = model.state_dict()
    for k, v in official.items():
        new = convert_key(k)
        if new is not None:
            assert torch.equal(state[new], torch.as_tensor(v).reshape(state[new].shape)), k


def test_train_stops_before_the_first_step_when_the_imagenet_file_is_missing(tmp_path):
    missing = tmp_path / "weights" / "R-50.pkl"
    out = subprocess.run([sys.executable, "train.py", "--config", "config/yolof_r50_c5_1x.yaml", "-o",
                          str(tmp_path / "run"), "--no_progress", "--opts", f"model.backbone.weights={missing}",
                          f"data.root={tmp_path / 'no_coco'}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert str(missing) in out.stderr and "dl.fbaipublicfiles.com" in out.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.slow
def test_train_starts_from_a_synthetic_r50_pkl(tmp_path, r50):
    write_pkl(tmp_path / "R-50.pkl", caffe2_blobs(r50, seed=2), with_blobs_level=True)
    opts = [f"model.backbone.weights={tmp_path / 'R-50.pkl'}", "model.num_classes=5", "data.dataset=synthetic",
            "data.train_split=train", "data.val_split=val",
            f"data.root={tmp_path / 'synth'}", "data.synthetic.num_train=4", "data.synthetic.num_val=2",
            "data.train_min_size=[128]", "data.train_max_size=128", "data.test_min_size=128",
            "data.test_max_size=128", "data.num_workers=0", "solver.batch_size=2", "solver.reference_batch_size=2",
            "solver.base_lr=0.001", "solver.warmup_iters=1", "solver.steps=[100]", "train.eval_period=0"]
    out = subprocess.run([sys.executable, "train.py", "--config", "config/yolof_r50_c5_1x.yaml", "-o",
                          str(tmp_path / "run"), "--no_progress", "--max_iter", "2", "--opts", *opts],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stderr + out.stdout
    assert "loaded 265 backbone tensors" in log and "R-50.pkl" in log
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records and records[-1]["iteration"] == 2
