"""Box helpers shared by the data pipeline and post-processing."""
from __future__ import annotations


def clip_boxes(boxes, height, width):
    """(N, 4) xyxy boxes (numpy array or torch tensor) clipped to ``[0, width] x [0, height]``; a new array."""
    out = boxes.copy() if hasattr(boxes, "copy") else boxes.clone()
    out[:, 0::2] = boxes[:, 0::2].clip(0, width)
    out[:, 1::2] = boxes[:, 1::2].clip(0, height)
    return out
