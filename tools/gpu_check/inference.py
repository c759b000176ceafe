"""Inference speed of YOLOF-R50-C5 (post-processing included) in each precision and layout."""
from __future__ import annotations

import copy
import time

import torch

from models.fuse import prepare_for_inference
from tools.gpu_check.training import batch, r50, sync
from utils.precision import amp_context

PAPER_FPS = 32  # the paper's YOLOF-R50-C5 on a 2080Ti


def inference_fps(device, size, batch_size: int, iters: int, precisions) -> dict[str, float]:
    """Images per second of the eval model at ``batch_size`` for each variant: the ``precisions``, channels_last
    (fp32) and the norms folded into the convolutions (fp32)."""
    model, _ = r50(device)
    model.eval()
    images = batch(batch_size, size, device)[0]
    amp = {"fp32": "none", "fp16": "fp16", "bf16": "bf16"}
    variants = {name: (model, amp[name]) for name in precisions}
    variants["channels_last"] = (copy.deepcopy(model).to(memory_format=torch.channels_last), "none")
    variants["fused"] = (prepare_for_inference(copy.deepcopy(model)), "none")
    fps = {}
    for name, (m, mode) in variants.items():
        with torch.no_grad(), amp_context(device, mode):
            for _ in range(2):
                m(images)
            sync(device)
            t0 = time.perf_counter()
            for _ in range(iters):
                m(images)
            sync(device)
        fps[name] = iters * batch_size / (time.perf_counter() - t0)
    return fps
