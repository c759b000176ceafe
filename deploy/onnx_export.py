"""Export a YOLOF to ONNX, in two variants, and check the file with ``onnx.checker``.

Both graphs take ``images`` (B, 3, H, W) float32 in 0-255, in the model's
``input_format`` channel order, already resized by the test transform; B, H and
W are dynamic. Pixel normalisation (the model's ``pixel_mean`` / ``pixel_std``
buffers) happens inside the graph, so ONNX users feed raw pixels.

* ``raw``: the decoder's outputs ``cls_logits`` (B, A*K, H', W') and ``bbox_reg``
  (B, A*4, H', W'). Anchors, decoding, top-k and NMS stay outside, in this
  project's :func:`models.postprocess.postprocess` (what :class:`deploy.Predictor`
  does with ONNX Runtime), so they are the same code as in PyTorch.
* ``full``: post-processing inside the graph too: ``boxes`` (N, 4) xyxy in input
  pixels, ``scores`` (N,), ``labels`` (N,) and ``batch_index`` (N,), one row per
  detection of the batch, as ONNX ``NonMaxSuppression`` reports them. Every op
  exports faithfully (top-k with a data-dependent k via torchvision's
  ``_topk_min``, torchvision NMS -> ``NonMaxSuppression``), with one documented
  difference: boxes are clipped to the batch tensor's (H, W), so feed batches of
  one image size (no padding) to get the PyTorch result.

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``, opset 17
(Conv, TopK, NonMaxSuppression and every op here exist since opset 11; 17 is the
newest that ONNX Runtime and the TorchScript exporter both fully support here).
The dynamo exporter (``dynamo=True``) was tried first: it fails on the
anchor generator's per-shape cache and on the data-dependent top-k / NMS sizes
of the ``full`` variant, so the TorchScript path is the one kept (see README, Deploy).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Union

import torch
from torch import nn
from torchvision.models.detection._utils import _topk_min
from torchvision.ops import batched_nms, clip_boxes_to_image

from models.detector import flatten_head_output
from models.fuse import fuse_for_inference

logger = logging.getLogger(__name__)

OPSET = 17
VARIANTS = ("raw", "full")


class RawHeadGraph(nn.Module):
    """images (B, 3, H, W) 0-255 -> cls_logits (B, A*K, H', W'), bbox_reg (B, A*4, H', W')."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        x = (images - m.pixel_mean) / m.pixel_std
        return m.decoder(m.encoder(m.backbone(x)))


class FullGraph(nn.Module):
    """images (B, 3, H, W) 0-255 -> boxes (N, 4), scores (N,), labels (N,), batch_index (N,).

    The same steps as :func:`models.postprocess.postprocess`, written with ops that
    trace into static ONNX nodes: the per-image split becomes a ``batch_index``
    column and the per-image ``max_detections`` cut a rank computed with ``cumsum``.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.head = RawHeadGraph(model)

    def forward(self, images: torch.Tensor):
        m = self.model
        cls, reg = self.head(images)
        h, w = cls.shape[-2], cls.shape[-1]
        m.anchor_generator._cache.clear()  # a cached tensor would be traced as a constant of the example's size
        anchors = m.anchor_generator(h, w)
        k = m.num_classes
        cls, deltas = flatten_head_output(cls, k), flatten_head_output(reg, 4)  # (B, R, K), (B, R, 4)
        b = cls.shape[0]
        scores_all = cls.sigmoid().flatten(1)  # (B, R*K)
        num_topk = _topk_min(anchors, m.topk_candidates, 0)  # min(topk_candidates, R), R traced
        scores, idx = scores_all.topk(num_topk, dim=1)  # (B, T)
        img_idx = torch.arange(b, device=images.device)[:, None].expand_as(idx)
        keep = scores > m.score_thresh
        scores, idx, img_idx = scores[keep], idx[keep], img_idx[keep]
        anchor_idx, labels = idx // k, idx % k
        boxes = m.box_coder.decode(deltas[img_idx, anchor_idx], anchors[anchor_idx])
        keep = batched_nms(boxes, scores, img_idx * k + labels, m.nms_thresh)  # sorted by score
        boxes, scores, labels, img_idx = boxes[keep], scores[keep], labels[keep], img_idx[keep]
        # rank of each detection within its image (keep is in descending score order)
        one_hot = (img_idx[:, None] == torch.arange(b, device=images.device)[None]).to(torch.int64)  # (N, B)
        rank = (one_hot.cumsum(0) * one_hot).sum(1) - 1
        keep = rank < m.max_detections
        boxes, scores, labels, img_idx = boxes[keep], scores[keep], labels[keep], img_idx[keep]
        boxes = clip_boxes_to_image(boxes, images.shape[-2:])  # traced sizes: the bound stays dynamic
        nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return boxes[nonempty], scores[nonempty], labels[nonempty], img_idx[nonempty]


def export_onnx(model: nn.Module, out: Union[str, Path], *, variant: str = "raw", example_size=(320, 480),
                metadata: dict | None = None) -> Path:
    """Write ``model`` (a YOLOF; folded into inference form here) to ``out`` and check it.

    ``metadata`` (JSON-serialisable, e.g. the resolved config and class names) is stored in the
    file's ``metadata_props`` under ``yolof``, so the file alone is enough to run it.
    """
    import onnx  # optional


    if variant not in VARIANTS:
        raise ValueError(f"unknown ONNX variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    model = fuse_for_inference(model.cpu().float())  # eval mode, contiguous weights, BN folded
    graph = RawHeadGraph(model) if variant == "raw" else FullGraph(model)
    example = torch.rand(1, 3, *example_size) * 255
    if variant == "raw":
        outputs = ["cls_logits", "bbox_reg"]
        axes = {"images": {0: "batch", 2: "height", 3: "width"},
                "cls_logits": {0: "batch", 2: "feat_height", 3: "feat_width"},
                "bbox_reg": {0: "batch", 2: "feat_height", 3: "feat_width"}}
    else:
        outputs = ["boxes", "scores", "labels", "batch_index"]
        axes = {"images": {0: "batch", 2: "height", 3: "width"}, **{n: {0: "detections"} for n in outputs}}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(graph, (example,), str(out), input_names=["images"], output_names=outputs,
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "yolof", json.dumps({"variant": variant, **(metadata or {})})
    onnx.save(proto, str(out))
    logger.info("exported the %s graph (opset %d) to %s; onnx.checker passed", variant, OPSET, out)
    return out


def read_metadata(path: Union[str, Path]) -> dict:
    """The ``yolof`` metadata that :func:`export_onnx` stored in ``path`` ({} if none)."""
    import onnx  # optional

    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.metadata_props:
        if entry.key == "yolof":
            return json.loads(entry.value)
    return {}
