"""The configuration schema: every key, its type and its default.

Defaults are the official YOLOF R50-C5 1x recipe (megvii-model/YOLOF,
``yolof.res50.C5.1x``) unless a comment says otherwise. Every trick that YOLOF
uses and RetinaNet does not is a switch here, so one ablation row is one set
of overrides.

Each section checks its own values in ``check(key)`` (ranges, consistency between its keys); the
loader calls every section's check, walking the tree, and nothing else. Sections hang beside what
they configure: ``data.synthetic``, ``data.yolo`` (the CSP pipeline), ``data.mosaic``, ``data.mixup``
and one section per matcher (``model.matcher.uniform`` ... ``model.matcher.atss``), each handed
whole to its builder. Keys of the flat layout before these sections (``data.mosaic_prob``,
``model.matcher.topk`` ...) still load: ``config.loader.LEGACY_KEYS`` maps them.

This file is the one place of defaults: the YAML presets in ``config/`` state
only what differs from it (or from the preset they derive from through
``_base_``). ``python -m config PRESET`` prints a preset's whole resolved
config with the comment of each key; ``config/README.md`` is that listing for
every preset (generated: ``python -m config --write-listing``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Union

from config.errors import check


@dataclass(frozen=True)
class BackboneConfig:
    name: str = "resnet50"  # one of models.backbone.BACKBONES (the ResNets, ResNeXts and cspdarknet53)
    style: str = "caffe"  # caffe: stride on the 1x1 conv (MSRA weights); pytorch: stride on the 3x3 conv
    dilated_c5: bool = False  # DC5: last stage dilated (stride 16) instead of strided (stride 32)
    freeze_at: int = 2  # 0: nothing frozen, 1: stem, 2: stem + first stage, ... 5: everything (cspdarknet53: k >= 1 freezes the stem and layer1..layer{k}; the official 2 = everything at stride <= 4)
    norm: str = "frozen_bn"  # frozen_bn | bn | syncbn (SyncBatchNorm under DDP, plain BN on one process; cspdarknet53: BN eps 1e-4, momentum 0.03 as official)
    weights: str = "none"  # none | imagenet (torchvision's file, from weights/; never downloaded) | a file path
    width_mult: float = 1.0  # scales every stage width (<1 for small CPU models; 1 for pretrained weights)

    def check(self, key: str) -> None:
        check(0 <= self.freeze_at <= 5, f"{key}.freeze_at", "must be in 0..5", got=self.freeze_at)


@dataclass(frozen=True)
class EncoderConfig:
    channels: int = 512  # projector output and block channels
    mid_channels: int = 128  # bottleneck middle channels of each residual block
    num_blocks: int = 4  # number of dilated residual blocks
    dilations: tuple[int, ...] = (2, 4, 6, 8)  # one dilation per block
    enabled: bool = True  # false: no encoder, one 1x1 conv from C5 to `channels` (the paper's "no encoder" baseline; the keys above but channels unused)
    residual: bool = True  # false: the projector alone, no dilated blocks (num_blocks and dilations unused)
    shortcut: bool = True  # false: blocks without their identity shortcut (the block's output is its conv branch)
    norm: str = "bn"  # one of models.layers.NORMS (syncbn: SyncBatchNorm under DDP, plain BN on one process)
    activation: str = "relu"  # one of models.layers.ACTIVATIONS (leaky_relu: slope 0.1, the official CSP-D-53 recipes)

    def check(self, key: str) -> None:
        check(len(self.dilations) == self.num_blocks, f"{key}.dilations",
              f"needs one dilation per block ({key}.num_blocks={self.num_blocks})", got=self.dilations)


@dataclass(frozen=True)
class DecoderConfig:
    num_cls_convs: int = 2  # conv-norm-ReLU layers in the classification subnet
    num_reg_convs: int = 4  # conv-norm-ReLU layers in the regression subnet
    pred_kernel: int = 3  # kernel of the cls/box/objectness prediction convs (1 = the seed's ablation)
    prior_prob: float = 0.01  # initial foreground probability (bias init of cls_score)
    implicit_objectness: bool = True  # false: no objectness branch, the class logits alone (the paper's ablation)
    norm: str = "bn"  # one of models.layers.NORMS (syncbn: SyncBatchNorm under DDP, plain BN on one process)
    activation: str = "relu"  # one of models.layers.ACTIVATIONS (leaky_relu: slope 0.1, the official CSP-D-53 recipes)

    def check(self, key: str) -> None:
        check(self.pred_kernel in (1, 3), f"{key}.pred_kernel", "must be 1 or 3", got=self.pred_kernel)


@dataclass(frozen=True)
class AnchorConfig:
    sizes: tuple[float, ...] = (32.0, 64.0, 128.0, 256.0, 512.0)  # anchor side lengths in input pixels
    aspect_ratios: tuple[float, ...] = (1.0,)  # h / w
    offset: float = 0.0  # anchor centre = (x + offset) * stride; official YOLOF uses 0.0
    custom_wh: tuple[tuple[float, float], ...] = ()  # explicit (w, h) cell anchors used instead of sizes x aspect_ratios when non-empty (k-means priors: python -m tools.kmeans_anchors)

    def check(self, key: str) -> None:
        check(all(w > 0 and h > 0 for w, h in self.custom_wh), f"{key}.custom_wh", "widths and heights must be > 0",
              got=self.custom_wh)


@dataclass(frozen=True)
class BoxCoderConfig:
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)  # (wx, wy, ww, wh)
    scale_clamp: float = math.log(1000.0 / 16)  # upper clamp of dw, dh before exp() (log(1000 / 16), as detectron2)
    ctr_clamp: float = 32.0  # max centre shift in pixels when decoding; <= 0 turns it off
    decode_method: str = "anchor"  # one of models.box_coder.DECODE_METHODS: anchor: offset scaled by anchor size (official); stride: by the stride (seed's method 1)


@dataclass(frozen=True)
class TopKMatcherConfig:
    """model.matcher.uniform / iou_topk: a top-k matcher's own option."""

    topk: int = 4  # k nearest (uniform: by L1 over predicted boxes and over anchors, each) / of highest IoU (iou_topk)

    def check(self, key: str) -> None:
        check(self.topk >= 1, f"{key}.topk", "must be >= 1", got=self.topk)


@dataclass(frozen=True)
class MaxIoUMatcherConfig:
    """model.matcher.max_iou: RetinaNet's thresholds."""

    pos_thresh: float = 0.5  # IoU >= this is positive
    neg_thresh: float = 0.4  # IoU < this is negative, in between ignored

    def check(self, key: str) -> None:
        check(0.0 <= self.neg_thresh <= self.pos_thresh <= 1.0, f"{key}.neg_thresh",
               f"must be in [0, {key}.pos_thresh]", got=self.neg_thresh)


@dataclass(frozen=True)
class GridMatcherConfig:
    """model.matcher.grid_center / grid_neighbors / grid_inside: which anchors of a chosen cell."""

    anchors: str = "best"  # best (the cell anchor whose shape fits the box best, YOLOv2/v3) | all (every anchor of a chosen cell)


@dataclass(frozen=True)
class ATSSMatcherConfig:
    """model.matcher.atss: adaptive training sample selection (Zhang et al., CVPR 2020) on the single level."""

    topk: int = 9  # candidates: the k anchors nearest each box by centre distance (ATSS: 9 per level)

    def check(self, key: str) -> None:
        check(self.topk >= 2, f"{key}.topk", "must be >= 2 (its IoUs' std needs two)", got=self.topk)


@dataclass(frozen=True)
class MatcherConfig:
    """Label assignment: the matcher (``name``, with its own section below) and the ignore thresholds the
    assigner applies after any matcher (models/assigner.py)."""

    name: str = "uniform"  # one of models.matcher.MATCHERS: uniform (L1 top-k) is official; the others are ablations (models/matcher.py); top1 has no options
    uniform: TopKMatcherConfig = field(default_factory=TopKMatcherConfig)
    iou_topk: TopKMatcherConfig = field(default_factory=TopKMatcherConfig)
    max_iou: MaxIoUMatcherConfig = field(default_factory=MaxIoUMatcherConfig)
    atss: ATSSMatcherConfig = field(default_factory=ATSSMatcherConfig)
    grid_center: GridMatcherConfig = field(default_factory=GridMatcherConfig)
    grid_neighbors: GridMatcherConfig = field(default_factory=GridMatcherConfig)
    grid_inside: GridMatcherConfig = field(default_factory=GridMatcherConfig)
    ignore_thresholds: bool = True  # apply the two thresholds below (official); False = every match positive, every other anchor negative
    neg_ignore_thresh: float = 0.7  # unmatched anchors whose predicted box has IoU > this with any GT are ignored
    pos_ignore_thresh: float = 0.15  # matched pairs whose anchor has IoU < this with its GT are ignored

    def section(self):
        """The selected matcher's own section (None for a matcher without options)."""
        return getattr(self, self.name, None)


@dataclass(frozen=True)
class LossConfig:
    focal_alpha: float = 0.25  # focal loss weight of the positives (torchvision.ops.sigmoid_focal_loss alpha)
    focal_gamma: float = 2.0  # focal loss focusing exponent
    cls_weight: float = 1.0  # factor of loss_cls (focal loss)
    box_weight: float = 1.0  # factor of loss_box_reg (GIoU loss)
    normalization: str = "batch"  # one of models.criterion.NORMALIZATIONS: batch: by total positives in the batch over all ranks (official); per_image: per image, then averaged (seed's method 1)
    image_mask: bool = False  # ignore anchors whose centre lies in padding (not in the official code)


@dataclass(frozen=True)
class TestConfig:
    score_thresh: float = 0.05  # candidates scoring at most this are dropped before NMS
    topk_candidates: int = 1000  # candidates kept per image before NMS (min with the number of anchors)
    nms_thresh: float = 0.6  # class-wise NMS IoU threshold
    max_detections: int = 100  # per image


@dataclass(frozen=True)
class ModelConfig:
    num_classes: Union[int, str] = 80  # or auto: the number of categories of the training annotations (kept with their names in checkpoints)
    input_format: str = "BGR"  # channel order of the images the model receives: BGR (caffe) | RGB (pytorch)
    pixel_mean: tuple[float, float, float] = (103.53, 116.28, 123.675)  # in input_format order, 0-255 scale
    pixel_std: tuple[float, float, float] = (1.0, 1.0, 1.0)  # in input_format order (1: the caffe-style MSRA weights)
    size_divisibility: int = 0  # pad batches to a multiple of this (0: only to the batch max, as official)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    box_coder: BoxCoderConfig = field(default_factory=BoxCoderConfig)
    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    test: TestConfig = field(default_factory=TestConfig)

    def check(self, key: str) -> None:
        check(self.num_classes == "auto" or (not isinstance(self.num_classes, str) and self.num_classes >= 1),
              f"{key}.num_classes", "must be >= 1 or 'auto'", got=self.num_classes)


@dataclass(frozen=True)
class SyntheticConfig:
    """data.synthetic: the built-in synthetic shapes (data/synthetic.py), generated into data.root on first use."""

    num_train: int = 3000  # training images
    num_val: int = 300  # held-out images
    image_size: tuple[int, int] = (256, 256)  # (h, w)
    seed: int = 0  # generation seed
    num_objects: tuple[int, int] = (1, 6)  # objects per image (min, max)
    min_box: float = 16.0  # smallest object side in pixels
    max_box: float = 0.0  # largest object side in pixels (0: 0.6 x the image side)
    size_range: tuple[int, ...] = ()  # [min, max] px of each image's h and w, drawn per image (varied shapes, batches need padding); empty: every image image_size
    max_aspect: float = 2.0  # with size_range: largest long / short side of an image
    stats: str = "none"  # one of data.synthetic.SYNTHETIC_STATS; none: the ranges above; coco: scenes drawn from COCO's measured statistics (data.synthetic.COCO_STATS: image shapes, objects per image, box sizes and shapes; 640-px images; the keys above other than num_train, num_val and seed unused)

    def check(self, key: str) -> None:
        check(not self.size_range or (len(self.size_range) == 2 and 1 <= self.size_range[0] <= self.size_range[1]),
               f"{key}.size_range", "must be empty or [min, max] with 1 <= min <= max", got=self.size_range)
        check(self.max_aspect >= 1.0, f"{key}.max_aspect", "must be >= 1", got=self.max_aspect)
        check(self.stats == "none" or not self.size_range, f"{key}.size_range",
               f"must be empty with {key}.stats={self.stats} (its table draws the image sizes)", got=self.size_range)


@dataclass(frozen=True)
class YoloPipelineConfig:
    """data.yolo: the steps of the CSP-D-53 recipes' pipeline (data.pipeline: yolo; data/yolo_transforms.py)."""

    jitter_crop: bool = True  # JitterCrop (YOLOv4) first
    jitter_ratio: float = 0.3  # each side of the image moves in or out by up to this fraction of it (official 0.3)
    resize_shape: tuple[int, int] = (640, 640)  # training resize (h, w), the aspect ratio is not kept (official 640 x 640)
    scale_jitter: tuple[float, float] = (0.8, 1.2)  # resize_shape times U(low, high), one draw per image ([1, 1]: off)
    distortion: bool = True  # random hue / saturation / exposure in HSV (official RandomDistortion2)
    hue: float = 0.1  # hue shift in U(-hue, hue), a fraction of the hue circle
    saturation: float = 1.5  # saturation scale in [1 / s, s]
    exposure: float = 1.5  # value (brightness) scale in [1 / e, e]
    test_resize_shape: tuple[int, int] = (608, 608)  # test resize (h, w), aspect ratio not kept (official 608 x 608); boxes are mapped back per axis

    def check(self, key: str) -> None:
        check(0.0 <= self.jitter_ratio < 0.5, f"{key}.jitter_ratio", "must be in [0, 0.5)", got=self.jitter_ratio)
        for name in ("resize_shape", "test_resize_shape"):
            check(min(getattr(self, name)) >= 1, f"{key}.{name}", "needs two positive sides (h, w)",
                   got=getattr(self, name))
        check(0.0 < self.scale_jitter[0] <= self.scale_jitter[1], f"{key}.scale_jitter",
               "must be [low, high] with 0 < low <= high", got=self.scale_jitter)
        check(0.0 <= self.hue <= 0.5, f"{key}.hue", "must be in [0, 0.5] (a fraction of the hue circle)", got=self.hue)
        for name in ("saturation", "exposure"):
            check(getattr(self, name) >= 1.0, f"{key}.{name}", "must be >= 1 (the scale is drawn in [1 / s, s])",
                   got=getattr(self, name))


@dataclass(frozen=True)
class MosaicConfig:
    """data.mosaic: 4 training images in one (YOLOv4; data/mosaic.py), a multi-image step (data/multi_image.py)."""

    prob: float = 0.0  # probability that a training image becomes a 4-image mosaic (data/mosaic.py; the CSP-D-53 recipes: 0.5; 0: off)
    size: tuple[int, int] = (640, 640)  # mosaic canvas (h, w) (official 640 x 640)
    min_offset: float = 0.2  # the mosaic's cut point lies at least this fraction of each side from the border (official 0.2)

    def check(self, key: str) -> None:
        check(0.0 <= self.prob <= 1.0, f"{key}.prob", "must be in [0, 1]", got=self.prob)
        check(min(self.size) >= 1, f"{key}.size", "needs two positive sides (h, w)", got=self.size)
        check(0.0 <= self.min_offset < 0.5 and all(
            int(s * self.min_offset) < int(s * (1 - self.min_offset)) for s in self.size), f"{key}.min_offset",
            f"leaves no room for the cut point in {key}.size {list(self.size)}", got=self.min_offset)


@dataclass(frozen=True)
class MixupConfig:
    """data.mixup: two training images blended (data/mixup.py), a multi-image step (data/multi_image.py)."""

    prob: float = 0.0  # probability that a training image is blended with another one (mixup, data/mixup.py; not official: 0)
    alpha: float = 1.5  # mixup ratio lambda ~ Beta(alpha, alpha) (1.5 as in "Bag of Freebies", Zhang et al. 2019); <= 0: fixed 0.5

    def check(self, key: str) -> None:
        check(0.0 <= self.prob <= 1.0, f"{key}.prob", "must be in [0, 1]", got=self.prob)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "coco"  # one of data.build.DATASETS
    root: str = "datasets/coco"  # coco: holds annotations/instances_<split>.json and <split>/; voc: VOCdevkit; synthetic: cache folder; yolo: the data.yaml; voc_xml: the folder holding the split folders (docs/your_own_data.md)
    train_split: str = "train2017"  # coco split name; voc: "2007_trainval+2012_trainval"; yolo: a key of the data.yaml (train); voc_xml: a folder or list file under root (train)
    val_split: str = "val2017"  # coco split name; voc: "2007_test"; yolo: a key of the data.yaml (val); voc_xml: a folder or list file under root (val)
    class_names: tuple[str, ...] = ()  # voc_xml: the classes in label order; empty: the sorted names found in the XML files of train_split and val_split (other datasets name their classes themselves)
    train_min_size: tuple[int, ...] = (800,)  # shorter side for training; several values = multi-scale, one drawn per image (ablation: [640, 672, 704, 736, 768, 800])
    train_max_size: int = 1333  # cap of the longer side for training
    test_min_size: int = 800  # shorter side for evaluation
    test_max_size: int = 1333  # cap of the longer side for evaluation
    flip_prob: float = 0.5  # horizontal flip probability
    random_shift: bool = True  # RandomShift augmentation (YOLOF)
    shift_max: int = 32  # RandomShift range in pixels: shifts in [-shift_max, shift_max - 1]
    shift_prob: float = 0.5  # RandomShift probability
    pipeline: str = "resize_shortest_edge"  # one of data.pipelines.PIPELINES: resize_shortest_edge (the ResNet recipes: train_/test_min_size ...); yolo (the CSP-D-53 recipes, its steps in data.yolo: JitterCrop -> Resize with scale jitter -> RandomDistortion -> flip -> shift; test: a fixed data.yolo.test_resize_shape)
    aspect_ratio_grouping: bool = True  # training batches of one aspect group (landscape / portrait), as the official sampler (data/sampler.py)
    test_batch_size: int = 1  # images per process in evaluation; official 1: padding a batch changes the features near the right and bottom edges
    filter_empty: bool = True  # drop training images without (non-crowd) boxes, as official
    num_workers: int = 8  # DataLoader workers per process (official 8; the X101 recipe: 4)
    cache_images: bool = False  # keep decoded training and validation images in memory after their first read (h x w x 3 bytes each: 650 MB for the quickstart's 3300); with num_workers 0 only (workers restart every epoch), else a logged skip
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    yolo: YoloPipelineConfig = field(default_factory=YoloPipelineConfig)
    mosaic: MosaicConfig = field(default_factory=MosaicConfig)
    mixup: MixupConfig = field(default_factory=MixupConfig)

    def check(self, key: str) -> None:
        check(self.test_batch_size >= 1, f"{key}.test_batch_size", "must be >= 1", got=self.test_batch_size)
        check(not self.class_names or self.dataset == "voc_xml", f"{key}.class_names",
              f"is read by data.dataset=voc_xml only ({self.dataset} names its classes in its own files)",
              got=self.class_names)
        check(all(n.strip() for n in self.class_names) and len(set(self.class_names)) == len(self.class_names),
              f"{key}.class_names", "must be distinct non-empty names", got=self.class_names)


@dataclass(frozen=True)
class SolverConfig:
    batch_size: int = 64  # total images per optimizer step, over all processes and accumulation steps
    base_lr: float = 0.12  # learning rate at reference_batch_size
    reference_batch_size: int = 64  # batch size base_lr was tuned for
    scale_lr: bool = True  # lr = base_lr * batch_size / reference_batch_size (linear scaling rule)
    optimizer: str = "sgd"  # one of engine.optim.OPTIMIZERS: sgd (official); adamw converges faster from scratch (the CPU quickstart)
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 1e-4  # weight decay of every parameter outside normalisation layers, biases included
    weight_decay_norm: float = 0.0  # weight decay of normalisation layers (official 0)
    backbone_lr_factor: float = 0.334  # backbone lr = lr * this (official 1/3)
    max_iter: int = 22500  # optimizer steps for a 1x schedule
    steps: tuple[int, ...] = (15000, 20000)  # lr x gamma at these steps
    gamma: float = 0.1  # lr factor at each of steps
    lr_decay: str = "step"  # one of engine.optim.LR_DECAYS: step (x gamma at each of steps; official) | cosine (from 1 to 0 at max_iter; steps and gamma unused)
    schedule: str = "1x"  # one of engine.optim.SCHEDULES: multiplies max_iter and steps (2x: by 2)
    warmup_iters: int = 1500  # linear warm-up steps
    warmup_factor: float = 0.00066667  # lr factor at step 0, rising linearly to 1 at warmup_iters
    clip_grad_norm: float = 0.0  # 0 = no clipping (official)
    amp: str = "none"  # one of utils.precision.AMP_MODES: autocast of the network (decoding, matching, losses stay fp32); fp16 adds a GradScaler; auto: bf16 where the device has it natively (CPU avx512_bf16/amx_bf16, CUDA sm80+), else none
    channels_last: bool = False  # channels_last memory format for the model and images
    fused_optimizer: bool = False  # torch's fused optimizer step (fused=True: one kernel over all parameters, CPU and CUDA): the same update up to float rounding; AdamW step of the quickstart model on 2 CPU threads 5.24 -> 2.15 ms (python -m bench.bench_optimizer)
    sync_bn: bool = False  # convert BatchNorm in encoder/decoder to SyncBatchNorm under DDP
    compile: bool = False  # torch.compile (inductor) the backbone, encoder and decoder for training (train.py --compile; models/compile.py; measured in docs/deployment.md)

    def check(self, key: str) -> None:
        check(self.batch_size >= 1, f"{key}.batch_size", "must be >= 1", got=self.batch_size)
        check(list(self.steps) == sorted(self.steps), f"{key}.steps", "must be increasing", got=self.steps)


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0  # seeds torch, numpy and random at the start of training
    eval_period: int = 1  # evaluate every N epochs (0: only at the end)
    checkpoint_period_iters: int = 0  # also checkpoint every N iterations (0: only each epoch); the resolution of an elastic restart (torchrun --max-restarts)
    nan_retries: int = 3  # non-finite losses (or gradients outside a GradScaler's skip) rolled back before the run stops (engine/trainer.py)
    log_period: int = 20  # iterations between log lines / TensorBoard points
    max_skip_fraction: float = 0.01  # fail when more than this fraction of images cannot be read
    ema: bool = False  # keep an exponential moving average of the weights, evaluated and saved as "model" (engine/ema.py; not official)
    ema_decay: float = 0.9998  # EMA decay d; the effective decay ramps up as d * (1 - exp(-updates / ema_ramp))
    ema_ramp: int = 2000  # EMA warm-up time constant in optimizer steps (0: constant decay from the first step)
    init_from: str = ""  # start from this whole-detector checkpoint (this project's format, e.g. tools/convert_official.py output) instead of model.backbone.weights: tensors by name and shape, classifier rows by class name (models/finetune.py; train.py --finetune); optimizer and schedule start fresh (the official stage-2 recipe starts from the 9x model); "" = off

    def check(self, key: str) -> None:
        check(0.0 <= self.ema_decay < 1.0, f"{key}.ema_decay", "must be in [0, 1)", got=self.ema_decay)
        check(self.ema_ramp >= 0, f"{key}.ema_ramp", "must be >= 0", got=self.ema_ramp)
        check(self.nan_retries >= 0, f"{key}.nan_retries", "must be >= 0", got=self.nan_retries)


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
