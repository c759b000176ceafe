"""The YOLOF detector: backbone -> dilated encoder -> decoder -> (label assignment + loss | post-processing)."""
from __future__ import annotations

import typing
from typing import Optional, Sequence, Union

import torch
from torch import nn

from config.schema import InputFormat
from models.anchors import AnchorGenerator
from models.assigner import Assignment, LabelAssigner
from models.box_coder import BoxCoder
from models.criterion import YOLOFCriterion
from utils.image_list import pad_images
from models.postprocess import postprocess
from utils.precision import fp32

INPUT_FORMATS = typing.get_args(InputFormat)  # model.input_format: the channel order of the images the model expects


def flatten_head_output(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, A*k, H, W) -> (B, H*W*A, k), row ``(y*W + x)*A + a`` (the official permute_to_N_HWA_K)."""
    b, _, h, w = x.shape
    return x.view(b, -1, k, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, k)


class YOLOF(nn.Module):
    """You Only Look One-level Feature (Chen et al., CVPR 2021).

    Eval mode: ``model(images)`` with ``images`` a list of (3, H_i, W_i) float
    tensors in 0-255 and ``input_format`` channel order (uint8 accepted) returns,
    per image, a dict with ``boxes`` (N, 4) xyxy in that image's pixels (or in
    ``output_sizes[i]`` when given), ``scores`` (N,) and ``labels`` (N,) in 0..K-1.

    Train mode: ``model(images, targets)`` with ``targets[i]`` holding ``boxes``
    (G_i, 4) xyxy pixels of the input image and ``labels`` (G_i,) returns the
    loss dict of :class:`models.criterion.YOLOFCriterion`: decode ->
    :class:`models.assigner.LabelAssigner` -> criterion (:meth:`compute_losses`).

    The assigner and the criterion hold no parameters or buffers: the state dict
    is the backbone's, encoder's, decoder's and ``pixel_mean`` / ``pixel_std``.

    Under autocast (``solver.amp``) only the network (:meth:`forward_features`) runs in
    half precision: decoding, label assignment, the losses and the post-processing run
    in fp32 on the fp32 head outputs.
    """

    def __init__(self, *, backbone: nn.Module, encoder: nn.Module, decoder: nn.Module,
                 anchor_generator: AnchorGenerator, box_coder: BoxCoder, assigner: LabelAssigner,
                 criterion: YOLOFCriterion, pixel_mean: Sequence[float], pixel_std: Sequence[float],
                 size_divisibility: int = 0, score_thresh: float = 0.05, topk_candidates: int = 1000,
                 nms_thresh: float = 0.6, max_detections: int = 100):
        super().__init__()
        self.backbone = backbone
        self.encoder = encoder
        self.decoder = decoder
        self.anchor_generator = anchor_generator
        self.box_coder = box_coder
        self.assigner = assigner
        self.criterion = criterion
        self.num_classes = decoder.num_classes
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(3, 1, 1))
        self.size_divisibility = size_divisibility
        self.score_thresh, self.topk_candidates = score_thresh, topk_candidates
        self.nms_thresh, self.max_detections = nms_thresh, max_detections

    # ------------------------------------------------------------------ input
    def preprocess(self,
                   images: Union[Sequence[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Validate, normalise and pad images into (B, 3, H, W); padding is 0 after normalisation."""
        if isinstance(images, torch.Tensor):
            if images.dim() == 3:
                images = [images]
            elif images.dim() == 4:
                images = list(images)
            else:
                raise ValueError("expected a list of (3, H, W) images or a (B, 3, H, W) tensor, "
                                 f"got shape {tuple(images.shape)}")
        if len(images) == 0:
            raise ValueError("got an empty list of images")
        normalized = []
        for i, im in enumerate(images):
            if not isinstance(im, torch.Tensor):
                raise TypeError(f"image {i} is a {type(im).__name__}, expected a torch.Tensor (3, H, W)")
            if im.dim() != 3:
                raise ValueError(f"image {i} has shape {tuple(im.shape)}: expected 3 dimensions (3, H, W)")
            if im.shape[0] != 3:
                hint = " (it looks like HWC: use image.permute(2, 0, 1))" if im.shape[-1] == 3 else ""
                raise ValueError(f"image {i} has shape {tuple(im.shape)}: expected 3 channels first (3, H, W){hint}")
            if im.shape[1] == 0 or im.shape[2] == 0:
                raise ValueError(f"image {i} is empty: shape {tuple(im.shape)}")
            im = im.to(self.pixel_mean.device, non_blocking=True)
            normalized.append((im.float() - self.pixel_mean) / self.pixel_std)
        batch, _, sizes = pad_images(normalized, self.size_divisibility)
        return batch, sizes

    # ------------------------------------------------------------------ network
    def forward_features(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> logits (B, R, K), deltas (B, R, 4), anchors (R, 4)."""
        if next(self.decoder.parameters()).is_contiguous(memory_format=torch.channels_last):
            batch = batch.contiguous(memory_format=torch.channels_last)
        feat = self.encoder(self.backbone(batch))
        cls, reg = self.decoder(feat)
        anchors = self.anchor_generator(feat.shape[-2], feat.shape[-1])
        return flatten_head_output(cls, self.num_classes), flatten_head_output(reg, 4), anchors

    @torch.no_grad()
    def assign(self, pred_boxes: torch.Tensor, anchors: torch.Tensor, targets: Sequence[dict], *,
               image_sizes: Sequence[tuple[int, int]]) -> Assignment:
        """Label assignment for decoded ``pred_boxes`` (B, R, 4) and ``anchors`` (R, 4): what training and
        ``--vis_targets`` both use. ``targets`` as in :meth:`forward`; ``image_sizes`` (h, w) before padding."""
        device = pred_boxes.device
        targets = [{"boxes": t["boxes"].to(device).float(), "labels": t["labels"].to(device)} for t in targets]
        return self.assigner(pred_boxes, anchors, targets, image_sizes=image_sizes)

    def compute_losses(self, cls: torch.Tensor, deltas: torch.Tensor, anchors: torch.Tensor, *,
                       targets: Sequence[dict], image_sizes: Sequence[tuple[int, int]],
                       reduce_over_ranks: bool = True) -> dict[str, torch.Tensor]:
        """Decode -> assign -> criterion: ``cls`` (B, R, K), ``deltas`` (B, R, 4), ``anchors`` (R, 4)."""
        pred_boxes = self.box_coder.decode(deltas, anchors)  # (B, R, 4), gradients flow through
        assignment = self.assign(pred_boxes, anchors, targets, image_sizes=image_sizes)
        return self.criterion(cls, pred_boxes, assignment, reduce_over_ranks=reduce_over_ranks)

    def forward(self, images, targets: Optional[Sequence[dict]] = None, *,
                output_sizes: Optional[Sequence[tuple[int, int]]] = None, reduce_over_ranks: bool = True):
        batch, sizes = self.preprocess(images)
        cls, deltas, anchors = self.forward_features(batch)
        with fp32(batch.device):
            return self._head_outputs(cls.float(), deltas.float(), anchors.float(), targets, sizes, output_sizes,
                                      reduce_over_ranks)

    def _head_outputs(self, cls, deltas, anchors, targets, sizes, output_sizes, reduce_over_ranks):
        """Losses (training) or detections (eval) from the fp32 head outputs; see :meth:`forward`."""
        if self.training:
            if targets is None:
                raise ValueError("in training mode the model needs targets (a list of dicts with boxes and labels)")
            if len(targets) != len(sizes):
                raise ValueError(f"got {len(sizes)} images but {len(targets)} targets")
            return self.compute_losses(cls, deltas, anchors, targets=targets, image_sizes=sizes,
                                       reduce_over_ranks=reduce_over_ranks)
        return postprocess(cls, deltas, anchors, box_coder=self.box_coder, image_sizes=sizes,
                           output_sizes=output_sizes, score_thresh=self.score_thresh,
                           topk_candidates=self.topk_candidates, nms_thresh=self.nms_thresh,
                           max_detections=self.max_detections)
