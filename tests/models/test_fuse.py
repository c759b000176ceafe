"""Folding norms into convolutions changes nothing but speed."""
import torch

from config import load_config
from models import build_model
from models.fuse import fuse_for_inference
from tests.conftest import REPO
from torchvision.ops import FrozenBatchNorm2d
from torch import nn


def test_fused_model_gives_the_same_detections():
    torch.manual_seed(0)
    cfg = load_config(REPO / "config/small_cpu.yaml",
                      {"model.backbone.norm": "frozen_bn", "model.test.score_thresh": 0.0})
    model = build_model(cfg).eval()
    for m in model.modules():  # non-trivial statistics
        if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    fused = fuse_for_inference(model)
    assert not any(isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)) for m in fused.modules())
    x = [torch.rand(3, 128, 160) * 255]
    with torch.no_grad():
        b = fused.preprocess(x)[0]
        ref, out = model.forward_features(b), fused.forward_features(b)
    torch.testing.assert_close(out[0], ref[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[1], ref[1], rtol=1e-4, atol=1e-4)
