"""``build_model(cfg)``: the one place that turns configuration into a YOLOF."""
from __future__ import annotations

from models.anchors import AnchorGenerator
from models.backbone import build_backbone
from models.box_coder import BoxCoder
from models.criterion import YOLOFCriterion
from models.decoder import Decoder
from models.detector import YOLOF
from models.encoder import DilatedEncoder
from models.matcher import build_matcher


def build_model(cfg) -> YOLOF:
    """Build the detector described by ``cfg`` (a :class:`config.Config` or its ``model`` section).

    Always randomly initialised and never reads a file: the ImageNet start
    (``model.backbone.weights``) is the trainer's job (:func:`models.pretrained.load_pretrained`),
    and a trained checkpoint holds everything else.
    """
    m = getattr(cfg, "model", cfg)
    bb = m.backbone
    backbone = build_backbone(bb.name, bb.style, bb.dilated_c5, bb.freeze_at, bb.norm, bb.width_mult)
    encoder = DilatedEncoder(backbone.out_channels, m.encoder.channels, m.encoder.mid_channels, m.encoder.dilations,
                             m.encoder.norm, m.encoder.activation)
    anchor_generator = AnchorGenerator(backbone.stride, m.anchors.sizes, m.anchors.aspect_ratios, m.anchors.offset,
                                       m.anchors.custom_wh)
    decoder = Decoder(m.encoder.channels, m.num_classes, anchor_generator.num_anchors, m.decoder.num_cls_convs,
                      m.decoder.num_reg_convs, m.decoder.pred_kernel, m.decoder.prior_prob, m.decoder.norm,
                      m.decoder.activation)
    box_coder = BoxCoder(m.box_coder.weights, m.box_coder.scale_clamp, m.box_coder.ctr_clamp,
                         m.box_coder.decode_method, backbone.stride)
    mt = m.matcher
    matcher = build_matcher(mt.name, mt.topk, mt.max_iou_pos_thresh, mt.max_iou_neg_thresh, stride=backbone.stride,
                            offset=m.anchors.offset, num_anchors=anchor_generator.num_anchors,
                            grid_anchors=mt.grid_anchors)
    criterion = YOLOFCriterion(m.num_classes, m.loss.focal_alpha, m.loss.focal_gamma, mt.ignore_thresholds,
                               mt.neg_ignore_thresh, mt.pos_ignore_thresh, m.loss.normalization, m.loss.image_mask,
                               m.loss.cls_weight, m.loss.box_weight)
    return YOLOF(backbone, encoder, decoder, anchor_generator, box_coder, matcher, criterion, m.pixel_mean,
                 m.pixel_std, m.size_divisibility, m.test.score_thresh, m.test.topk_candidates, m.test.nms_thresh,
                 m.test.max_detections)


def sync_batchnorm_parts(cfg) -> dict[str, str]:
    """The configured norm of each part of the detector, for :func:`models.layers.convert_sync_batchnorm`."""
    m = getattr(cfg, "model", cfg)
    return {"backbone": m.backbone.norm, "encoder": m.encoder.norm, "decoder": m.decoder.norm}
