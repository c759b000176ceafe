"""The configuration schema: every key, its type, its default and a one-line comment.

Defaults are the official YOLOF R50-C5 1x recipe (megvii-model/YOLOF, ``yolof.res50.C5.1x``) unless a comment says
otherwise. Every trick that YOLOF uses and RetinaNet does not is a switch here, so one ablation row is one set of
overrides.

The loader checks every value when a config loads: its type, the names a family key may take (the ``Literal`` types
below), and each section's ``check(key)`` (ranges, consistency between its keys; the loader walks the tree and
calls them, knowing none). Sections hang beside what they configure: ``data.synthetic``, ``data.yolo`` (the CSP
pipeline), ``data.mosaic``, ``data.mixup`` and one section per matcher (``model.matcher.uniform`` ...
``model.matcher.atss``; the three grid matchers share ``model.matcher.grid``), each handed whole to its builder.

This file is the one place of defaults: the YAML presets in ``config/`` state only what differs from it (or from
the preset they derive from through ``_base_``). ``python -m config PRESET`` prints a preset's whole resolved
config with the comment of each key; ``config/README.md`` is that listing for every preset (generated:
``python -m config --write-listing``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Union

from config.errors import ConfigError, check
from config.imagenet import check_weights_fit

# The names of each family a config key picks from. The loader refuses any other value, naming the key and these
# names; each family's registry holds the same names (models.backbone.BACKBONES, models.matcher.MATCHERS,
# data.build.DATASETS ...), and tests/config/test_families.py checks every pair.
BackboneName = Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnext50_32x4d", "resnext101_32x8d",
                       "resnext101_64x4d", "cspdarknet53"]
BackboneStyle = Literal["caffe", "pytorch"]
BackboneNorm = Literal["frozen_bn", "bn", "syncbn"]
Norm = Literal["bn", "syncbn", "gn", "none"]
Activation = Literal["relu", "leaky_relu"]
InputFormat = Literal["BGR", "RGB"]
DecodeMethod = Literal["anchor", "stride"]
MatcherName = Literal["uniform", "iou_topk", "max_iou", "atss", "top1", "grid_center", "grid_neighbors", "grid_inside"]
GridAnchors = Literal["best", "all"]
LossNormalization = Literal["batch", "per_image"]
DatasetName = Literal["coco", "voc", "synthetic", "yolo", "voc_xml"]
PipelineName = Literal["resize_shortest_edge", "yolo"]
SceneStatsName = Literal["none", "coco"]
OptimizerName = Literal["sgd", "adamw"]
LRDecay = Literal["step", "cosine"]
ScheduleName = Literal["1x", "2x", "3x"]
AmpMode = Literal["none", "fp16", "bf16", "auto"]


@dataclass(frozen=True)
class BackboneConfig:
    name: BackboneName = "resnet50"  # the backbone network: an ImageNet ResNet / ResNeXt, or CSP-DarkNet-53
    style: BackboneStyle = "caffe"  # ResNets' stride-2 conv: caffe on the 1x1 (MSRA weights), pytorch on the 3x3
    dilated_c5: bool = False  # DC5: the last stage dilated (output stride 16) instead of strided (32)
    freeze_at: int = 2  # stages frozen from the input: 0 none, 1 the stem, 2 stem + first stage ... 5 all
    norm: BackboneNorm = "frozen_bn"  # the backbone's norm (syncbn: SyncBatchNorm under DDP, BN on one process)
    weights: str = "none"  # ImageNet start: none, imagenet (torchvision's file in weights/) or a file path
    width_mult: float = 1.0  # factor of every stage's width (1 for ImageNet weights; < 1: small CPU models)

    def check(self, key: str) -> None:
        check(0 <= self.freeze_at <= 5, f"{key}.freeze_at", "must be in 0..5", got=self.freeze_at)


@dataclass(frozen=True)
class EncoderConfig:
    channels: int = 512  # output channels of the projector and of each residual block
    mid_channels: int = 128  # bottleneck channels inside each residual block
    dilations: tuple[int, ...] = (2, 4, 6, 8)  # one dilated residual block per entry, in order, with that dilation
    enabled: bool = True  # false: no encoder, C5 through one 1x1 conv to `channels` (the paper's ablation)
    residual: bool = True  # false: the projector alone, without the dilated blocks (the paper's ablation)
    shortcut: bool = True  # false: blocks without their identity shortcut (the paper's ablation)
    norm: Norm = "bn"  # normalisation after each conv (syncbn: SyncBatchNorm under DDP, BN on one process)
    activation: Activation = "relu"  # after each norm (leaky_relu: slope 0.1, as the CSP-D-53 recipes)

    def check(self, key: str) -> None:
        check(all(d >= 1 for d in self.dilations), f"{key}.dilations", "must be >= 1", got=self.dilations)


@dataclass(frozen=True)
class DecoderConfig:
    num_cls_convs: int = 2  # conv-norm-activation layers of the classification subnet
    num_reg_convs: int = 4  # conv-norm-activation layers of the regression subnet
    pred_kernel: int = 3  # kernel size of the class, box and objectness prediction convs (1 or 3)
    prior_prob: float = 0.01  # foreground probability the class logits start at (bias initialisation)
    implicit_objectness: bool = True  # false: class logits alone, no objectness branch (the paper's ablation)
    norm: Norm = "bn"  # normalisation after each conv (syncbn: SyncBatchNorm under DDP, BN on one process)
    activation: Activation = "relu"  # after each norm (leaky_relu: slope 0.1, as the CSP-D-53 recipes)

    def check(self, key: str) -> None:
        check(self.pred_kernel in (1, 3), f"{key}.pred_kernel", "must be 1 or 3", got=self.pred_kernel)


@dataclass(frozen=True)
class AnchorConfig:
    sizes: tuple[float, ...] = (32.0, 64.0, 128.0, 256.0, 512.0)  # anchor sides in input pixels
    aspect_ratios: tuple[float, ...] = (1.0,)  # anchor h / w; each size takes each ratio
    offset: float = 0.0  # anchor centre = (cell index + offset) * stride, in pixels
    custom_wh: tuple[tuple[float, float], ...] = ()  # (w, h) pixels of each cell anchor instead of sizes x ratios

    def check(self, key: str) -> None:
        check(all(w > 0 and h > 0 for w, h in self.custom_wh), f"{key}.custom_wh", "widths and heights must be > 0",
              got=self.custom_wh)


@dataclass(frozen=True)
class BoxCoderConfig:
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)  # divisors (wx, wy, ww, wh) of the deltas
    scale_clamp: float = math.log(1000.0 / 16)  # upper bound of the log-size deltas dw, dh before exp()
    ctr_clamp: float = 32.0  # largest centre shift of a decoded box, in pixels (<= 0: no bound)
    decode_method: DecodeMethod = "anchor"  # centre offsets in units of the anchor size (official) or of the stride


@dataclass(frozen=True)
class TopKMatcherConfig:
    """model.matcher.uniform / iou_topk: a top-k matcher's own option."""

    topk: int = 4  # anchors per box: k nearest in L1 by prediction and by anchor (uniform), k of highest IoU (iou_topk)

    def check(self, key: str) -> None:
        check(self.topk >= 1, f"{key}.topk", "must be >= 1", got=self.topk)


@dataclass(frozen=True)
class MaxIoUMatcherConfig:
    """model.matcher.max_iou: RetinaNet's thresholds."""

    pos_thresh: float = 0.5  # an anchor whose best IoU reaches this is positive
    neg_thresh: float = 0.4  # an anchor whose best IoU is below this is negative (in between: ignored)

    def check(self, key: str) -> None:
        check(0.0 <= self.neg_thresh <= self.pos_thresh <= 1.0, f"{key}.neg_thresh",
              f"must be in [0, {key}.pos_thresh]", got=self.neg_thresh)


@dataclass(frozen=True)
class GridMatcherConfig:
    """model.matcher.grid: which anchors of a chosen cell, for the three grid matchers (grid_center ...)."""

    anchors: GridAnchors = "best"  # of a chosen cell: the anchor whose shape fits the box best (YOLOv2/v3), or all


@dataclass(frozen=True)
class ATSSMatcherConfig:
    """model.matcher.atss: adaptive training sample selection (Zhang et al., CVPR 2020) on the single level."""

    topk: int = 9  # candidates per box: the k anchors nearest its centre

    def check(self, key: str) -> None:
        check(self.topk >= 2, f"{key}.topk", "must be >= 2 (its IoUs' std needs two)", got=self.topk)


@dataclass(frozen=True)
class MatcherConfig:
    """Label assignment: the matcher (``name``, with its own section below) and the ignore thresholds the
    assigner applies after any matcher (models/assigner.py)."""

    name: MatcherName = "uniform"  # the matcher (models/matcher.py): uniform (L1 top-k) is official
    uniform: TopKMatcherConfig = field(default_factory=TopKMatcherConfig)
    iou_topk: TopKMatcherConfig = field(default_factory=TopKMatcherConfig)
    max_iou: MaxIoUMatcherConfig = field(default_factory=MaxIoUMatcherConfig)
    atss: ATSSMatcherConfig = field(default_factory=ATSSMatcherConfig)
    grid: GridMatcherConfig = field(default_factory=GridMatcherConfig)
    ignore_thresholds: bool = True  # apply the two thresholds below (false: every match positive, the rest negative)
    neg_ignore_thresh: float = 0.7  # an unmatched anchor whose predicted box has an IoU above this with a box: ignored
    pos_ignore_thresh: float = 0.15  # a match whose anchor has an IoU below this with its box: ignored

    def section(self):
        """The selected matcher's own section: model.matcher.<name>, ``grid`` for the grid_* matchers (None: top1)."""
        return getattr(self, "grid" if self.name.startswith("grid_") else self.name, None)


@dataclass(frozen=True)
class LossConfig:
    focal_alpha: float = 0.25  # focal loss weight of the positives (1 - this: of the negatives)
    focal_gamma: float = 2.0  # focal loss focusing exponent
    cls_weight: float = 1.0  # factor of the classification loss (focal)
    box_weight: float = 1.0  # factor of the box loss (GIoU)
    normalization: LossNormalization = "batch"  # divide by the positives of the batch on all ranks, or per image
    image_mask: bool = False  # ignore anchors centred in padding (not in the official code)


@dataclass(frozen=True)
class TestConfig:
    score_thresh: float = 0.05  # candidates scoring at most this are dropped before NMS
    topk_candidates: int = 1000  # candidates kept per image before NMS
    nms_thresh: float = 0.6  # IoU above which NMS drops the lower-scoring box of a class
    max_detections: int = 100  # detections kept per image


@dataclass(frozen=True)
class ModelConfig:
    num_classes: Union[int, str] = 80  # classes, or auto: the categories of the training set (named in checkpoints)
    input_format: InputFormat = "BGR"  # channel order of the images the model receives
    pixel_mean: tuple[float, float, float] = (103.53, 116.28, 123.675)  # per channel, input_format order, 0-255
    pixel_std: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per channel, input_format order, 0-255
    size_divisibility: int = 0  # pad each batch's sides to a multiple of this (0: to the largest image only)
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
        check_weights_fit(self, key)


@dataclass(frozen=True)
class SyntheticConfig:
    """data.synthetic: the built-in synthetic shapes (data/synthetic/), generated into data.root on first use."""

    num_train: int = 3000  # training images
    num_val: int = 300  # validation images
    image_size: tuple[int, int] = (256, 256)  # (h, w) of every image, in pixels
    seed: int = 0  # seed of the generation (the same seed gives the same files)
    num_objects: tuple[int, int] = (1, 6)  # (min, max) objects tried per image
    min_box: float = 16.0  # smallest object size sqrt(w * h), in pixels
    max_box: float = 0.0  # largest object size sqrt(w * h), in pixels (0: 0.6 x the image's short side)
    size_range: tuple[int, ...] = ()  # [min, max] pixels of each image's h and w, drawn per image (empty: image_size)
    max_aspect: float = 2.0  # with size_range: largest long / short side of an image
    stats: SceneStatsName = "none"  # coco: scenes drawn from COCO's statistics (the keys above but num_*, seed unused)

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
    jitter_ratio: float = 0.3  # JitterCrop moves each side in or out by up to this fraction of the image
    resize_shape: tuple[int, int] = (640, 640)  # training resize (h, w) in pixels, aspect ratio not kept
    scale_jitter: tuple[float, float] = (0.8, 1.2)  # resize_shape times U(low, high), one draw per image
    distortion: bool = True  # random hue, saturation and exposure in HSV
    hue: float = 0.1  # hue shift in U(-hue, hue), a fraction of the hue circle
    saturation: float = 1.5  # saturation scale drawn in [1 / s, s]
    exposure: float = 1.5  # value (brightness) scale drawn in [1 / e, e]
    test_resize_shape: tuple[int, int] = (608, 608)  # test resize (h, w) in pixels, aspect ratio not kept

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

    prob: float = 0.0  # probability that a training image becomes a 4-image mosaic (0: off)
    size: tuple[int, int] = (640, 640)  # mosaic canvas (h, w) in pixels
    min_offset: float = 0.2  # the cut point's least distance from each border, a fraction of the side

    def check(self, key: str) -> None:
        check(0.0 <= self.prob <= 1.0, f"{key}.prob", "must be in [0, 1]", got=self.prob)
        check(min(self.size) >= 1, f"{key}.size", "needs two positive sides (h, w)", got=self.size)
        check(0.0 <= self.min_offset < 0.5 and all(
            int(s * self.min_offset) < int(s * (1 - self.min_offset)) for s in self.size), f"{key}.min_offset",
            f"leaves no room for the cut point in {key}.size {list(self.size)}", got=self.min_offset)


@dataclass(frozen=True)
class MixupConfig:
    """data.mixup: two training images blended (data/mixup.py), a multi-image step (data/multi_image.py)."""

    prob: float = 0.0  # probability that a training image is blended with another (0: off; not official)
    alpha: float = 1.5  # blend ratio ~ Beta(alpha, alpha) ("Bag of Freebies", Zhang et al. 2019); <= 0: always 0.5

    def check(self, key: str) -> None:
        check(0.0 <= self.prob <= 1.0, f"{key}.prob", "must be in [0, 1]", got=self.prob)


@dataclass(frozen=True)
class DataConfig:
    dataset: DatasetName = "coco"  # the annotation format of data.root (docs/your_own_data.md)
    root: str = "datasets/coco"  # the dataset's folder (coco, voc, voc_xml, synthetic) or data.yaml file (yolo)
    train_split: str = "train2017"  # training split: its name, folder or list file, as the format names splits
    val_split: str = "val2017"  # validation split, named as train_split
    class_names: tuple[str, ...] = ()  # voc_xml: the classes in label order (empty: the sorted names in the files)
    train_min_size: tuple[int, ...] = (800,)  # shorter side for training, in pixels; several: one drawn per image
    train_max_size: int = 1333  # cap of the longer side for training, in pixels
    test_min_size: int = 800  # shorter side for evaluation, in pixels
    test_max_size: int = 1333  # cap of the longer side for evaluation, in pixels
    flip_prob: float = 0.5  # horizontal flip probability
    random_shift: bool = True  # YOLOF's RandomShift augmentation
    shift_max: int = 32  # RandomShift's range: shifts in [-shift_max, shift_max - 1] pixels
    shift_prob: float = 0.5  # RandomShift probability
    pipeline: PipelineName = "resize_shortest_edge"  # the transforms: the ResNet recipes' or the yolo ones (data.yolo)
    aspect_ratio_grouping: bool = True  # training batches of one aspect group (landscape or portrait)
    test_batch_size: int = 1  # images per process in evaluation (more: padding changes the features at the edges)
    filter_empty: bool = True  # drop training images without (non-crowd) boxes
    num_workers: int = 8  # DataLoader worker processes per training process
    cache_images: bool = False  # keep decoded images in memory after their first read (h x w x 3 bytes each)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    yolo: YoloPipelineConfig = field(default_factory=YoloPipelineConfig)
    mosaic: MosaicConfig = field(default_factory=MosaicConfig)
    mixup: MixupConfig = field(default_factory=MixupConfig)

    def check(self, key: str) -> None:
        check(self.test_batch_size >= 1, f"{key}.test_batch_size", "must be >= 1", got=self.test_batch_size)
        check(self.num_workers >= 0, f"{key}.num_workers", "must be >= 0", got=self.num_workers)
        if self.cache_images and self.num_workers > 0:  # loader workers restart every epoch: a cache dies with them
            raise ConfigError(f"config key '{key}.cache_images': needs {key}.num_workers=0, got {key}.num_workers="
                              f"{self.num_workers} (set {key}.cache_images=false to load with workers)")
        check(not self.class_names or self.dataset == "voc_xml", f"{key}.class_names",
              f"is read by data.dataset=voc_xml only ({self.dataset} names its classes in its own files)",
              got=self.class_names)
        check(all(n.strip() for n in self.class_names) and len(set(self.class_names)) == len(self.class_names),
              f"{key}.class_names", "must be distinct non-empty names", got=self.class_names)


@dataclass(frozen=True)
class SolverConfig:
    batch_size: int = 64  # images per optimizer step, over all processes and accumulation steps
    base_lr: float = 0.12  # learning rate at reference_batch_size
    reference_batch_size: int = 64  # the batch size base_lr is given for
    scale_lr: bool = True  # linear scaling: lr = base_lr * batch_size / reference_batch_size, iterations inversely
    optimizer: OptimizerName = "sgd"  # sgd (official), or adamw (faster from scratch: the CPU recipes)
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 1e-4  # weight decay of every parameter outside normalisation layers, biases included
    weight_decay_norm: float = 0.0  # weight decay of normalisation layers
    backbone_lr_factor: float = 0.334  # the backbone's lr is lr times this
    max_iter: int = 22500  # optimizer steps of the 1x schedule
    steps: tuple[int, ...] = (15000, 20000)  # optimizer steps at which lr_decay step multiplies the lr by gamma
    gamma: float = 0.1  # lr factor at each of steps
    lr_decay: LRDecay = "step"  # after warm-up: x gamma at each of steps (official), or a cosine to 0 at max_iter
    schedule: ScheduleName = "1x"  # multiplier of max_iter and steps
    warmup_iters: int = 1500  # optimizer steps of the linear warm-up
    warmup_factor: float = 1 / 1500  # lr factor at step 0, rising linearly to 1 at warmup_iters (a number or p/q)
    clip_grad_norm: float = 0.0  # largest gradient norm, clipped above (0: no clipping)
    amp: AmpMode = "none"  # autocast of the network (fp16 adds a GradScaler; auto: bf16 where native, else none)
    channels_last: bool = False  # channels_last memory format for the model and the images
    fused_optimizer: bool = False  # torch's fused optimizer step: one kernel over all parameters, the same update
    compile: bool = False  # torch.compile (inductor) the backbone, encoder and decoder for training

    def check(self, key: str) -> None:
        check(self.batch_size >= 1, f"{key}.batch_size", "must be >= 1", got=self.batch_size)
        check(list(self.steps) == sorted(self.steps), f"{key}.steps", "must be increasing", got=self.steps)


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0  # seeds torch, numpy and random at the start of training
    eval_period: int = 1  # evaluate every this many epochs (0: only at the end)
    checkpoint_period_iters: int = 0  # also checkpoint every this many steps (0: each epoch), where a restart resumes
    nan_retries: int = 3  # non-finite steps in a row rolled back before the run stops (a finite step resets it)
    log_period: int = 20  # optimizer steps between log lines and TensorBoard points
    max_skip_fraction: float = 0.01  # the run fails when more than this fraction of images cannot be read
    ema: bool = False  # evaluate and save an exponential moving average of the weights (not official)
    ema_decay: float = 0.9998  # EMA decay d; the effective decay is d * (1 - exp(-updates / ema_ramp))
    ema_ramp: int = 2000  # EMA warm-up time constant in optimizer steps (0: decay d from the first step)
    init_from: str = ""  # start from this detector's tensors that fit, classifier rows by class name ("": off)

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
