"""The named augmentation pipelines (``data.pipeline``), built from the ``data`` section of the config.

* ``resize_shortest_edge``: the official ResNet recipes, :func:`data.transforms.build_transforms`
  (train: ResizeShortestEdge -> RandomFlip -> RandomShift; test: ResizeShortestEdge).
* ``yolo``: the official CSP-D-53 recipes (:mod:`data.yolo_transforms`); train: JitterCrop
  -> Resize with scale jitter -> RandomDistortion -> RandomFlip -> RandomShift; test: a
  fixed Resize to ``test_resize_shape`` (not keeping the aspect ratio; the model maps
  its boxes back to the original image by separate x and y factors).

Both end with :class:`data.transforms.ClipAndFilterBoxes`. The mosaic
(``data.mosaic.prob > 0``, :mod:`data.multi_image`) wraps the per-image training steps of either one;
it needs the dataset, so :func:`data.build.build_dataset` installs it.
"""
from __future__ import annotations

from typing import Callable

from data.transforms import ClipAndFilterBoxes, Compose, build_transforms, flip_shift_steps
from data.yolo_transforms import JitterCrop, RandomDistortion, Resize

__all__ = ["PIPELINES", "build_pipeline", "build_per_image_train_steps"]


def _flip_shift(d) -> list:
    return flip_shift_steps(d.flip_prob, d.shift_max, d.shift_prob, d.random_shift)


def _resize_shortest_edge(d, is_train: bool) -> Compose:
    if is_train:
        return build_transforms(True, d.train_min_size, d.train_max_size, flip_prob=d.flip_prob,
                                shift_max=d.shift_max, shift_prob=d.shift_prob, random_shift=d.random_shift)
    return build_transforms(False, d.test_min_size, d.test_max_size)


def _yolo(d, is_train: bool) -> Compose:
    if not is_train:
        return Compose([Resize(d.yolo.test_resize_shape), ClipAndFilterBoxes()])
    y = d.yolo  # its own section
    steps: list = [JitterCrop(y.jitter_ratio)] if y.jitter_crop else []
    steps.append(Resize(y.resize_shape, y.scale_jitter))
    if y.distortion:
        steps.append(RandomDistortion(y.hue, y.saturation, y.exposure))
    return Compose(steps + _flip_shift(d) + [ClipAndFilterBoxes()])


# name -> builder(data_config, is_train) -> Compose ending with ClipAndFilterBoxes
PIPELINES: dict[str, Callable] = {"resize_shortest_edge": _resize_shortest_edge, "yolo": _yolo}


def build_pipeline(d, is_train: bool) -> Compose:
    """The ``data.pipeline`` transforms of data config ``d`` for training or testing."""
    return PIPELINES[d.pipeline](d, is_train)


def build_per_image_train_steps(d) -> Compose:
    """The training pipeline without its final clip: what :class:`data.mosaic.Mosaic` applies to each image."""
    steps = build_pipeline(d, True).transforms
    assert isinstance(steps[-1], ClipAndFilterBoxes)
    return Compose(steps[:-1])
