"""``build_model(cfg)``: the one place that turns configuration into a YOLOF."""
from __future__ import annotations

from torch import nn

from models.anchors import AnchorGenerator
from models.assigner import LabelAssigner
from models.backbone import build_backbone
from models.box_coder import BoxCoder
from models.criterion import YOLOFCriterion
from models.decoder import Decoder
from models.detector import YOLOF
from models.encoder import C5Projection, DilatedEncoder
from models.matcher import build_matcher


def build_model(cfg) -> YOLOF:
    """Build the detector described by ``cfg`` (a :class:`config.Config` or its ``model`` section).

    Always randomly initialised and never reads a file: the ImageNet start
    (``model.backbone.weights``) is the trainer's job (:func:`models.pretrained.load_pretrained`),
    and a trained checkpoint holds everything else.
    """
    m = getattr(cfg, "model", cfg)
    bb = m.backbone
    # built in this order: the random initialisation draws backbone, encoder, then decoder weights
    backbone = build_backbone(bb.name, style=bb.style, dilated_c5=bb.dilated_c5, freeze_at=bb.freeze_at, norm=bb.norm,
                              width_mult=bb.width_mult)
    encoder = build_encoder(m.encoder, in_channels=backbone.out_channels)
    anchor_generator = AnchorGenerator(stride=backbone.stride, sizes=m.anchors.sizes,
                                       aspect_ratios=m.anchors.aspect_ratios, offset=m.anchors.offset,
                                       custom_wh=m.anchors.custom_wh)
    decoder = Decoder(in_channels=m.encoder.channels, num_classes=m.num_classes,
                      num_anchors=anchor_generator.num_anchors, num_cls_convs=m.decoder.num_cls_convs,
                      num_reg_convs=m.decoder.num_reg_convs, pred_kernel=m.decoder.pred_kernel,
                      prior_prob=m.decoder.prior_prob, norm=m.decoder.norm, act=m.decoder.activation,
                      implicit_objectness=m.decoder.implicit_objectness)
    box_coder = BoxCoder(weights=m.box_coder.weights, scale_clamp=m.box_coder.scale_clamp,
                         ctr_clamp=m.box_coder.ctr_clamp, decode_method=m.box_coder.decode_method,
                         stride=backbone.stride)
    criterion = YOLOFCriterion(focal_alpha=m.loss.focal_alpha, focal_gamma=m.loss.focal_gamma,
                               normalization=m.loss.normalization, cls_weight=m.loss.cls_weight,
                               box_weight=m.loss.box_weight)
    return YOLOF(backbone=backbone, encoder=encoder, decoder=decoder, anchor_generator=anchor_generator,
                 box_coder=box_coder, assigner=build_assigner(m, stride=backbone.stride,
                                                              num_anchors=anchor_generator.num_anchors),
                 criterion=criterion, pixel_mean=m.pixel_mean, pixel_std=m.pixel_std,
                 size_divisibility=m.size_divisibility, score_thresh=m.test.score_thresh,
                 topk_candidates=m.test.topk_candidates, nms_thresh=m.test.nms_thresh,
                 max_detections=m.test.max_detections)


def build_encoder(e, *, in_channels: int) -> nn.Module:
    """The encoder of ``model.encoder`` config ``e``: YOLOF's dilated encoder, or one of the paper's ablations of it
    (``enabled: false``: a 1x1 conv from C5; ``residual: false``: the projector alone; ``shortcut: false``)."""
    if not e.enabled:
        return C5Projection(in_channels, e.channels)
    return DilatedEncoder(in_channels=in_channels, channels=e.channels, mid_channels=e.mid_channels,
                          dilations=e.dilations if e.residual else (), norm=e.norm, act=e.activation,
                          shortcut=e.shortcut)


def build_assigner(m, *, stride: int, num_anchors: int) -> LabelAssigner:
    """The label assigner of model config ``m``: its matcher, ignore thresholds and image mask; ``stride`` and
    ``num_anchors`` (per cell) describe the anchor grid for the grid matchers."""
    mt = m.matcher
    matcher = build_matcher(mt.name, mt.section(), stride=stride, offset=m.anchors.offset, num_anchors=num_anchors)
    return LabelAssigner(matcher, num_classes=m.num_classes, ignore_thresholds=mt.ignore_thresholds,
                         neg_ignore_thresh=mt.neg_ignore_thresh, pos_ignore_thresh=mt.pos_ignore_thresh,
                         image_mask=m.loss.image_mask)


def sync_batchnorm_parts(cfg) -> dict[str, str]:
    """The configured norm of each part of the detector, for :func:`models.layers.convert_sync_batchnorm`."""
    m = getattr(cfg, "model", cfg)
    return {"backbone": m.backbone.norm, "encoder": m.encoder.norm, "decoder": m.decoder.norm}
