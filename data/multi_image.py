"""Multi-image augmentations: training samples made of several images, one mechanism for all of them.

A multi-image step is a transform ``t(image, target, rng)`` of the dataset's pipeline that draws the other
images it needs from :class:`RawSamples` (the dataset's own images, untransformed) with the sample's rng, and
augments them with a pipeline it holds:

* :class:`data.mosaic.Mosaic` (``data.mosaic``): the per-image steps on four images, then one canvas;
* :class:`data.mixup.Mixup` (``data.mixup``): the whole pipeline (mosaic included) on two images, blended.

:func:`training_pipeline` installs both on a dataset, in that order; everything stays a pure function of
(index, seed), whatever the number of workers.
"""
from __future__ import annotations

import numpy as np

from data.mixup import Mixup
from data.mosaic import Mosaic
from data.pipelines import build_per_image_train_steps
from data.transforms import ClipAndFilterBoxes, Compose, Target

__all__ = ["RawSamples", "training_pipeline"]


class RawSamples:
    """Untransformed numpy ``(image, target)`` pairs of a :class:`data.dataset_base.DetectionDatasetBase`.

    An unreadable image is counted by the dataset (its usual skip limit applies) and
    replaced by the next readable one, as ``dataset[i]`` does.
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[np.ndarray, Target]:
        ds, n = self.dataset, len(self.dataset)
        for attempt in range(n):
            i = (int(index) + attempt) % n
            image, reason = ds.decoded_image(i)
            if image is not None:
                return image, ds.get_annotation(i)
            ds._register_bad(i, ds.get_file_name(i), reason)
        raise RuntimeError(f"{type(ds).__name__}: none of the {n} images could be read for the mosaic")


def training_pipeline(d, dataset, pipeline):
    """``pipeline`` (data config ``d``'s training transforms of ``dataset``) with the multi-image steps ``d``
    turns on: the mosaic around the per-image steps, then mixup around everything."""
    if d.mosaic.prob > 0:
        pipeline = Compose([Mosaic(build_per_image_train_steps(d), RawSamples(dataset), prob=d.mosaic.prob,
                                   size=d.mosaic.size, min_offset=d.mosaic.min_offset), ClipAndFilterBoxes()])
    if d.mixup.prob > 0:
        pipeline = Mixup(pipeline, RawSamples(dataset), prob=d.mixup.prob, alpha=d.mixup.alpha)
    return pipeline
