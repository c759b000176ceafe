"""Box coding between anchors and boxes (R-CNN deltas, YOLOF's centre clamp).

Deltas ``(dx, dy, dw, dh)`` relative to an anchor of centre ``(cx, cy)`` and size
``(w, h)``::

    official ("anchor"):  x = cx + clamp(dx / wx * w, -c, c)    box w = exp(min(dw / ww, s)) * w
    seed ("stride"):      x = cx + clamp(dx / wx * stride, -c, c)

where ``c`` is ``ctr_clamp`` (YOLOF: 32 px; off when <= 0) and ``s`` is
``scale_clamp`` = log(1000 / 16), which keeps ``exp()`` finite. Widths are
``x2 - x1`` (no +1), as in detectron2/cvpods.

Both directions compute in fp32 whatever the inputs' dtype and the autocast state:
under bf16 a centre at x = 1186.24 px would land on 1184 (bf16 keeps 8 significant
bits), a 4-8 px grid on the right half of an 800x1333 image.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from utils.precision import fp32

class BoxCoder:
    def __init__(self, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0), scale_clamp: float = math.log(1000.0 / 16),
                 ctr_clamp: Optional[float] = 32.0, decode_method: str = "anchor", stride: int = 32):
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp
        self.ctr_clamp = ctr_clamp if ctr_clamp is not None and ctr_clamp > 0 else None
        self.decode_method = decode_method
        self.stride = stride

    def _offset_scale(self, widths: torch.Tensor, heights: torch.Tensor):
        if self.decode_method == "anchor":
            return widths, heights
        s = torch.full_like(widths, float(self.stride))
        return s, s

    def encode(self, anchors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Deltas (..., 4) float32 that turn ``anchors`` (..., 4) into ``boxes`` (..., 4), both xyxy."""
        with fp32(boxes.device):
            return self._encode(anchors.float(), boxes.float())

    def _encode(self, anchors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        wx, wy, ww, wh = self.weights
        aw = anchors[..., 2] - anchors[..., 0]
        ah = anchors[..., 3] - anchors[..., 1]
        ax = anchors[..., 0] + 0.5 * aw
        ay = anchors[..., 1] + 0.5 * ah
        bw = boxes[..., 2] - boxes[..., 0]
        bh = boxes[..., 3] - boxes[..., 1]
        bx = boxes[..., 0] + 0.5 * bw
        by = boxes[..., 1] + 0.5 * bh
        sx, sy = self._offset_scale(aw, ah)
        return torch.stack(
            [wx * (bx - ax) / sx, wy * (by - ay) / sy, ww * torch.log(bw / aw), wh * torch.log(bh / ah)], dim=-1
        )

    def decode(self, deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Boxes (..., 4) xyxy float32 from ``deltas`` (..., 4) and ``anchors`` broadcastable to them."""
        with fp32(deltas.device):
            return self._decode(deltas.float(), anchors.float())

    def _decode(self, deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        wx, wy, ww, wh = self.weights
        aw = anchors[..., 2] - anchors[..., 0]
        ah = anchors[..., 3] - anchors[..., 1]
        ax = anchors[..., 0] + 0.5 * aw
        ay = anchors[..., 1] + 0.5 * ah
        sx, sy = self._offset_scale(aw, ah)
        off_x = deltas[..., 0] / wx * sx
        off_y = deltas[..., 1] / wy * sy
        if self.ctr_clamp is not None:
            off_x = off_x.clamp(-self.ctr_clamp, self.ctr_clamp)
            off_y = off_y.clamp(-self.ctr_clamp, self.ctr_clamp)
        dw = (deltas[..., 2] / ww).clamp(max=self.scale_clamp)
        dh = (deltas[..., 3] / wh).clamp(max=self.scale_clamp)
        cx = ax + off_x
        cy = ay + off_y
        w = torch.exp(dw) * aw
        h = torch.exp(dh) * ah
        return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
