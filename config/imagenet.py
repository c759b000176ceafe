"""The published ImageNet starts the presets name, and what each needs of the model it starts.

``model.backbone.weights`` (``imagenet``: torchvision's file; or a file path) must fit the model: ResNet style, the
input channel order and the pixel statistics the file was trained with. :func:`check_weights_fit` is the model
section's check at load time; :mod:`models.pretrained` reads the files and names their download in its errors.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from config.errors import ConfigError

# torchvision's ImageNet normalisation on the 0-255 scale, RGB
TORCHVISION_MEAN = (123.675, 116.28, 103.53)
TORCHVISION_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class ImageNetFile:
    """A published ImageNet start and the model settings it only works with."""

    url: str
    size: str  # download size, for the README and the error message
    backbones: tuple[str, ...]  # model.backbone.name values it fits
    style: Optional[str]  # model.backbone.style it needs (None: not a ResNet)
    input_format: str  # model.input_format it was trained with
    pixel_std: Optional[tuple[float, float, float]]  # model.pixel_std it needs (None: any)


_D2 = "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained"
IMAGENET_FILES: dict[str, ImageNetFile] = {
    "R-50.pkl": ImageNetFile(f"{_D2}/MSRA/R-50.pkl", "~205 MB (estimated: weights + momentum twins)", ("resnet50",),
                             "caffe", "BGR", (1.0, 1.0, 1.0)),
    "R-101.pkl": ImageNetFile(f"{_D2}/MSRA/R-101.pkl", "~356 MB (estimated)", ("resnet101",), "caffe", "BGR",
                              (1.0, 1.0, 1.0)),
    "X-101-64x4d.pkl": ImageNetFile(f"{_D2}/FBResNeXt/X-101-64x4d.pkl", "~668 MB (estimated)", ("resnext101_64x4d",),
                                    "pytorch", "BGR", (1.0, 1.0, 1.0)),
    "cspdarknet53.pth": ImageNetFile(
        "https://1drv.ms/u/s!AgM0VtBH3kV9imGxZX3n_TMQGtbP?e=YMgpGJ (linked from the official YOLOF README)",
        "~110 MB (estimated)",
        ("cspdarknet53",), None, "BGR", None),
}


def _close(a, b) -> bool:
    return all(abs(x - y) < 1e-3 for x, y in zip(a, b))


def check_weights_fit(m, key: str = "model") -> None:
    """The ImageNet start ``m.backbone.weights`` of the model section ``m`` fits the model: style, channel order and
    pixel statistics (:data:`IMAGENET_FILES` says what each published file needs); else a ConfigError naming both
    keys."""
    bb = m.backbone
    if bb.weights == "none":
        return

    def fail(keys: str, why: str) -> None:
        raise ConfigError(f"config keys '{key}.backbone.weights' and {keys}: {why}")

    if bb.width_mult != 1.0:
        fail(f"'{key}.backbone.width_mult'", f"pretrained weights need width_mult=1, got {bb.width_mult}")
    if bb.weights == "imagenet":  # torchvision's files
        if bb.style != "pytorch":
            fail(f"'{key}.backbone.style'", "torchvision weights (imagenet) are pytorch-style (stride on the 3x3 "
                                            f"conv); set {key}.backbone.style=pytorch")
        if m.input_format != "RGB":
            fail(f"'{key}.input_format'",
                 f"torchvision weights (imagenet) expect RGB input; set {key}.input_format=RGB")
        if not (_close(m.pixel_mean, TORCHVISION_MEAN) and _close(m.pixel_std, TORCHVISION_STD)):
            fail(f"'{key}.pixel_mean' / '{key}.pixel_std'", f"torchvision weights (imagenet) expect mean "
                 f"{list(TORCHVISION_MEAN)} and std {list(TORCHVISION_STD)} (RGB, 0-255), got {list(m.pixel_mean)} "
                 f"and {list(m.pixel_std)}")
        return
    name = Path(bb.weights).name
    known = IMAGENET_FILES.get(name)
    if known is None:
        if name.endswith(".pkl") and m.input_format != "BGR":
            fail(f"'{key}.input_format'", f"{name} is a Detectron/Caffe2 pickle, trained on BGR input; set "
                                          f"{key}.input_format=BGR")
        return
    if bb.name not in known.backbones:
        fail(f"'{key}.backbone.name'", f"{name} holds {' / '.join(known.backbones)}, not {bb.name}")
    if known.style is not None and bb.style != known.style:
        fail(f"'{key}.backbone.style'", f"{name} is {known.style}-style; set {key}.backbone.style={known.style}")
    if m.input_format != known.input_format:
        fail(f"'{key}.input_format'", f"{name} was trained on {known.input_format} input; set "
                                      f"{key}.input_format={known.input_format}")
    if known.pixel_std is not None and not _close(m.pixel_std, known.pixel_std):
        fail(f"'{key}.pixel_std'", f"{name} expects pixel_std {list(known.pixel_std)}, got {list(m.pixel_std)}")
