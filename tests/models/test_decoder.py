"""models/decoder.py: the decoder without implicit objectness (the paper's switch)."""
from __future__ import annotations

import torch

from models.decoder import Decoder, combine_objectness


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_decoder_without_implicit_objectness_returns_the_class_logits():
    torch.manual_seed(0)
    dec = Decoder(8, num_classes=3, num_anchors=2, implicit_objectness=False).eval()
    torch.manual_seed(0)
    official = Decoder(8, num_classes=3, num_anchors=2).eval()
    assert dec.object_pred is None
    assert _params(official) - _params(dec) == 8 * 2 * 9 + 2  # object_pred: 3x3 conv 8 -> 2 anchors, with bias
    x = torch.randn(1, 8, 4, 5)
    cls, box = dec(x)
    assert torch.equal(cls, dec.cls_score(dec.cls_subnet(x))) and box.shape == (1, 8, 4, 5)
    off_cls, _ = official(x)
    obj = official.object_pred(official.bbox_subnet(x))
    assert torch.equal(off_cls, combine_objectness(official.cls_score(official.cls_subnet(x)), obj, 3))
