"""Single-level anchor generator (YOLOF: one level, stride 32 or 16)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


class AnchorGenerator(nn.Module):
    """Anchors on one feature map.

    Cell anchors are centred at 0: for size ``s`` and aspect ratio ``r`` (h / w),
    ``w = s / sqrt(r)``, ``h = s * sqrt(r)``, box ``(-w/2, -h/2, w/2, h/2)``, ordered
    size-major (all ratios of the first size, then the next size...). They sit at
    ``((x + offset) * stride, (y + offset) * stride)``; official YOLOF uses
    offset 0, i.e. the top-left corner of each stride cell. The anchors of a map
    are ordered ``(y * W + x) * A + a``, the same order as the permuted head
    outputs. Anchors are never clipped.

    ``custom_wh``: explicit ``(w, h)`` cell anchors (e.g. k-means priors from
    ``tools/kmeans_anchors.py``), used in their given order instead of
    ``sizes x aspect_ratios`` when non-empty.
    """

    def __init__(self, stride: int, sizes: Sequence[float], aspect_ratios: Sequence[float] = (1.0,),
                 offset: float = 0.0, custom_wh: Sequence[Sequence[float]] = ()):
        super().__init__()
        self.stride = stride
        self.offset = offset
        cells = []
        if len(custom_wh) > 0:
            for w, h in custom_wh:
                cells.append([-w / 2, -h / 2, w / 2, h / 2])
        else:
            for s in sizes:
                for r in aspect_ratios:
                    w = s / math.sqrt(r)
                    h = s * math.sqrt(r)
                    cells.append([-w / 2, -h / 2, w / 2, h / 2])
        self.register_buffer("cell_anchors", torch.tensor(cells, dtype=torch.float32), persistent=False)
        self._cache: dict = {}

    @property
    def num_anchors(self) -> int:
        return self.cell_anchors.shape[0]

    def forward(self, height: int, width: int) -> torch.Tensor:
        """Anchors (H*W*A, 4) in xyxy input-image pixels for an H x W feature map."""
        key = (height, width, self.cell_anchors.device, self.cell_anchors.dtype)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        device = self.cell_anchors.device
        xs = (torch.arange(width, dtype=torch.float32, device=device) + self.offset) * self.stride
        ys = (torch.arange(height, dtype=torch.float32, device=device) + self.offset) * self.stride
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
        anchors = (shifts + self.cell_anchors.view(1, -1, 4)).reshape(-1, 4)
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[key] = anchors
        return anchors
