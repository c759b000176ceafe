"""Inference post-processing: top-k candidates, score threshold, decode, class-wise NMS.

Vectorised over the batch: one ``topk`` for all images, one
``torchvision.ops.batched_nms`` call whose groups are (image, class) pairs.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torchvision.ops import batched_nms

from models.box_coder import BoxCoder
from utils.boxes import clip_boxes


def postprocess(
    cls_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    anchors: torch.Tensor,
    *,
    box_coder: BoxCoder,
    image_sizes: Sequence[tuple[int, int]],
    output_sizes: Optional[Sequence[tuple[int, int]]] = None,
    score_thresh: float = 0.05,
    topk_candidates: int = 1000,
    nms_thresh: float = 0.6,
    max_detections: int = 100,
) -> list[dict[str, torch.Tensor]]:
    """Detections per image, following the official ``YOLOF.inference`` + ``detector_postprocess``.

    Args:
        cls_logits: (B, R, K) logits, R = H*W*A anchors in ``(y*W + x)*A + a`` order.
        box_deltas: (B, R, 4).
        anchors: (R, 4) xyxy.
        image_sizes: (h, w) of each of the B images as the model saw it (before padding).
        output_sizes: (h, w) to rescale each image's boxes to (default: ``image_sizes``).

    Per image: the ``min(topk_candidates, R)`` best of the R*K scores (note: min with
    the number of anchors, as the official code), kept when ``score > score_thresh``;
    decoded; class-wise NMS; the ``max_detections`` best; boxes rescaled to the output
    size, clipped to it and dropped when empty. Returns dicts with ``boxes`` (N, 4)
    xyxy, ``scores`` (N,), ``labels`` (N,) int64.
    """
    b, r, k = cls_logits.shape
    num_topk = min(topk_candidates, r)
    scores_all = cls_logits.detach().sigmoid().flatten(1)  # (B, R*K), flat = anchor*K + class
    scores, idx = scores_all.topk(num_topk, dim=1, sorted=True)  # (B, T)
    keep = scores > score_thresh
    img_idx = torch.arange(b, device=scores.device)[:, None].expand_as(idx)[keep]
    scores, idx = scores[keep], idx[keep]
    anchor_idx = idx // k
    labels = idx % k
    boxes = box_coder.decode(box_deltas.detach()[img_idx, anchor_idx], anchors[anchor_idx])

    # Class-wise NMS for all images at once: groups are (image, class).
    keep = batched_nms(boxes.float(), scores.float(), img_idx * k + labels, nms_thresh)  # sorted by score
    boxes, scores, labels, img_idx = boxes[keep], scores[keep], labels[keep], img_idx[keep]

    out_sizes = output_sizes if output_sizes is not None else image_sizes
    return _per_image(boxes, scores, labels, img_idx, image_sizes=image_sizes, output_sizes=out_sizes,
                      max_detections=max_detections)


def _per_image(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, img_idx: torch.Tensor, *,
               image_sizes: Sequence[tuple[int, int]], output_sizes: Sequence[tuple[int, int]],
               max_detections: int) -> list[dict[str, torch.Tensor]]:
    """Split the batch's NMS survivors (N,) (in descending score order within each image) by image: the
    ``max_detections`` best, rescaled from ``image_sizes`` to ``output_sizes``, clipped, empty ones dropped."""
    order = torch.argsort(img_idx, stable=True)
    boxes, scores, labels, img_idx = boxes[order], scores[order], labels[order], img_idx[order]
    counts = torch.bincount(img_idx, minlength=len(image_sizes)).tolist()
    results = []
    for i, (bx, sc, lb) in enumerate(zip(boxes.split(counts), scores.split(counts), labels.split(counts))):
        bx, sc, lb = bx[:max_detections], sc[:max_detections], lb[:max_detections]
        (in_h, in_w), (out_h, out_w) = image_sizes[i], output_sizes[i]
        if (in_h, in_w) != (out_h, out_w):
            scale = bx.new_tensor([out_w / in_w, out_h / in_h, out_w / in_w, out_h / in_h])
            bx = bx * scale
        bx = clip_boxes(bx, out_h, out_w)
        nonempty = (bx[:, 2] > bx[:, 0]) & (bx[:, 3] > bx[:, 1])
        results.append({"boxes": bx[nonempty], "scores": sc[nonempty], "labels": lb[nonempty]})
    return results
