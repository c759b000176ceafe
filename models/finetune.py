"""Fine-tuning: start a detector from any trained YOLOF (``train.init_from``), whatever its classes.

:func:`init_from_checkpoint` loads every tensor of the start checkpoint whose name and shape match the model:
backbone, encoder, the decoder's towers, box and objectness heads. The classifier (``decoder.cls_score``) is
the one part whose shape follows the classes; its rows are taken class by class:

* when the checkpoint knows its class names (this project's checkpoints store ``class_names``; official COCO
  weights converted by tools/convert_official.py get COCO's 80), each class of the run that the start knows by
  name keeps the start's rows (its weights for every anchor, and its bias); names are compared in lower case
  with ``_`` and ``-`` read as spaces, after :data:`CLASS_ALIASES` (``motorbike`` is COCO's ``motorcycle``);
* without names, the rows are kept by position when the class counts agree;
* every other class starts as a fresh head does: weights drawn by the model's own initialisation, bias at the
  prior probability (``model.decoder.prior_prob``, focal-loss initialisation), so a new class starts rare.

Anything else that does not fit (another backbone or width, another encoder, other anchors: a head with another
number of anchors) stops the run with one line naming the first tensors: only the classifier may change. So does
a start whose stored config reads its input otherwise (``model.input_format``, ``model.backbone.style``: the
official caffe-style BGR ResNet and torchvision's RGB one have the same tensors).

The log says, one line each, what was loaded, which classes were mapped (and from which start class), and which
classifier rows start fresh and why.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from torch import nn

from utils.checkpoint import CheckpointError, load_checkpoint

__all__ = ["CLASS_ALIASES", "CLASSIFIER", "FinetuneStart", "canonical_class_name", "match_classes",
           "init_from_checkpoint"]

logger = logging.getLogger(__name__)

# the state-dict entries whose rows are (anchor, class) pairs: channel a * K + k is class k of anchor a
CLASSIFIER = ("decoder.cls_score.weight", "decoder.cls_score.bias")

# other spellings of COCO's class names, as other datasets write them (left: the spelling, right: COCO's name);
# Pascal VOC's six that differ from COCO, and common variants of COCO's two-word names
CLASS_ALIASES: dict[str, str] = {
    "aeroplane": "airplane",
    "motorbike": "motorcycle",
    "tvmonitor": "tv",
    "tv monitor": "tv",
    "television": "tv",
    "sofa": "couch",
    "diningtable": "dining table",
    "pottedplant": "potted plant",
    "cellphone": "cell phone",
    "mobile phone": "cell phone",
    "trafficlight": "traffic light",
    "firehydrant": "fire hydrant",
    "stopsign": "stop sign",
    "hairdryer": "hair drier",
    "hair dryer": "hair drier",
    "teddybear": "teddy bear",
    "sportsball": "sports ball",
    "wineglass": "wine glass",
    "hotdog": "hot dog",
    "doughnut": "donut",
    "ski": "skis",
    "people": "person",
    "pedestrian": "person",
}


def canonical_class_name(name: str) -> str:
    """The form names are compared in: lower case, ``_`` / ``-`` / runs of spaces as one space, then
    :data:`CLASS_ALIASES`. ``"Dining_Table"`` and ``"diningtable"`` -> ``"dining table"``."""
    key = re.sub(r"[\s_\-]+", " ", str(name).strip().lower())
    return CLASS_ALIASES.get(key, CLASS_ALIASES.get(key.replace(" ", ""), key))


def match_classes(run_names: Sequence[str], start_names: Sequence[str]) -> dict[int, int]:
    """Run class index -> start class index, for the run's classes the start knows by name
    (:func:`canonical_class_name`); a start class serves at most one run class (the first that names it)."""
    start = {}
    for j, name in enumerate(start_names):
        start.setdefault(canonical_class_name(name), j)
    out, taken = {}, set()
    for k, name in enumerate(run_names):
        j = start.get(canonical_class_name(name))
        if j is not None and j not in taken:
            out[k] = j
            taken.add(j)
    return out


@dataclass
class FinetuneStart:
    """What :func:`init_from_checkpoint` did: the tensors loaded as they are, the run classes whose classifier
    rows come from the start (run index -> start index), and those that start fresh."""

    path: str
    loaded: list[str] = field(default_factory=list)
    mapped: dict[int, int] = field(default_factory=dict)
    fresh: list[int] = field(default_factory=list)
    by: str = "name"  # how classes were matched: "name" or "position"


def _part(key: str) -> str:
    return key.split(".", 1)[0]


def _refuse(path, problems: list[str]) -> CheckpointError:
    shown = "; ".join(problems[:3]) + (f"; ... ({len(problems)} in all)" if len(problems) > 3 else "")
    return CheckpointError(f"{path} does not fit this model beyond its classifier: {shown}. Fine-tuning keeps "
                           f"everything but the classes: model.backbone, model.encoder, model.decoder and "
                           f"model.anchors must be the start's (its config holds them)")


def _check_fit(path, state: dict, own: dict, num_anchors: int) -> None:
    """Every entry but the classifier's must match by name and shape; the classifier's by anchors and width."""
    problems = []
    for k, v in own.items():
        if k in CLASSIFIER or (k.endswith("num_batches_tracked") and k not in state):  # a counter: the model's
            continue
        if k not in state:
            problems.append(f"{k} {tuple(v.shape)} is not in the checkpoint")
        elif tuple(state[k].shape) != tuple(v.shape):
            problems.append(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}")
    problems += [f"{k} {tuple(state[k].shape)} is in the checkpoint only" for k in state
                 if k not in own and not k.endswith("num_batches_tracked")]
    for k in CLASSIFIER:
        if k not in state:
            problems.append(f"{k} is not in the checkpoint")
            continue
        s, o = tuple(state[k].shape), tuple(own[k].shape)
        if s[1:] != o[1:] or s[0] % num_anchors:
            problems.append(f"{k}: checkpoint {s} vs model {o} (not {num_anchors} anchors of the same width)")
    if problems:
        raise _refuse(path, problems)


def _names_of(classes: Sequence[int], names: Sequence[str], limit: int = 12) -> str:
    shown = [str(names[k]) for k in classes[:limit]]
    return ", ".join(shown) + (f", ... ({len(classes)} in all)" if len(classes) > limit else "")


def _check_input(path, ckpt: dict, model_cfg) -> None:
    """The start's stored ``model.input_format`` and ``model.backbone.style`` must be the run's."""
    start = (ckpt.get("config") or {}).get("model") or {}
    ours = {"model.input_format": model_cfg.input_format, "model.backbone.style": model_cfg.backbone.style}
    theirs = {"model.input_format": start.get("input_format"),
              "model.backbone.style": (start.get("backbone") or {}).get("style")}
    wrong = [f"{k}={theirs[k]} (this run: {v})" for k, v in ours.items() if theirs[k] is not None and theirs[k] != v]
    if wrong:
        raise CheckpointError(f"{path} was trained with {', '.join(wrong)}: its weights read the input that way; "
                              f"fine-tune with its settings (the config stored in it)")


def init_from_checkpoint(model: nn.Module, path: Union[str, Path], class_names: Sequence[str], *,
                         model_cfg=None, num_anchors: Optional[int] = None) -> FinetuneStart:
    """Load the detector checkpoint ``path`` into ``model`` (freshly built for the run's ``class_names``) as the
    module docstring says; returns what was done. Raises :class:`CheckpointError` when anything beyond the
    classifier does not fit, naming the first tensors, or when the start reads its input otherwise than
    ``model_cfg`` (the run's ``model`` config section) says."""
    ckpt = load_checkpoint(path)
    if model_cfg is not None:
        _check_input(path, ckpt, model_cfg)
    state = ckpt["model"]
    own = model.state_dict()
    A = num_anchors if num_anchors is not None else int(model.decoder.num_anchors)
    _check_fit(path, state, own, A)
    K = len(class_names)
    K_start = int(state[CLASSIFIER[1]].shape[0]) // A
    if K * A != own[CLASSIFIER[1]].shape[0]:
        raise ValueError(f"the model has {own[CLASSIFIER[1]].shape[0] // A} classes, the run {K} ({class_names})")
    start_names = ckpt.get("class_names")
    if start_names is not None and len(start_names) != K_start:
        raise CheckpointError(f"{path}: class_names lists {len(start_names)} classes but its classifier has "
                              f"{K_start}")
    report = FinetuneStart(str(path))
    if start_names:
        report.mapped = match_classes(class_names, start_names)
    else:
        report.by = "position"
        report.mapped = {k: k for k in range(K)} if K == K_start else {}
    report.fresh = [k for k in range(K) if k not in report.mapped]

    new = {k: v for k, v in state.items() if k in own and k not in CLASSIFIER}
    report.loaded = sorted(new)
    new.update({k: v for k, v in own.items() if k not in state and k.endswith("num_batches_tracked")})
    if report.mapped:  # rows a * K + k of the run <- rows a * K_start + j of the start, for every anchor a
        run_k = torch.tensor(list(report.mapped), dtype=torch.long)
        start_k = torch.tensor(list(report.mapped.values()), dtype=torch.long)
        anchors = torch.arange(A).unsqueeze(1)
        dst, src = (anchors * K + run_k).flatten(), (anchors * K_start + start_k).flatten()
    for key in CLASSIFIER:
        rows = own[key].clone()  # the fresh head: model initialisation, bias at the prior probability
        if report.mapped:
            rows[dst] = state[key][src].to(rows.dtype)
        new[key] = rows
    model.load_state_dict(new, strict=True)
    _log(report, len(state), class_names, start_names, K_start, A)
    return report


def _log(r: FinetuneStart, num_start: int, names: Sequence[str], start_names, K_start: int, A: int) -> None:
    by_part: dict[str, int] = {}
    for k in r.loaded:
        by_part[_part(k)] = by_part.get(_part(k), 0) + 1
    parts = ", ".join(f"{p} {n}" for p, n in by_part.items())
    logger.info("fine-tuning from %s: loaded %d of its %d tensors as they are (%s); the classifier "
                "(decoder.cls_score, %d anchors x %d classes) is taken class by class", r.path, len(r.loaded),
                num_start, parts, A, len(names))
    if r.mapped:
        pairs = [str(names[k]) if not start_names or start_names[j] == names[k] else f"{names[k]} <- {start_names[j]}"
                 for k, j in r.mapped.items()]
        how = "matched by name with the start's" if r.by == "name" else "by position (the start names no classes)"
        logger.info("classifier rows kept for %d of %d classes, %s: %s", len(r.mapped), len(names), how,
                    ", ".join(pairs[:20]) + (f", ... ({len(pairs)} in all)" if len(pairs) > 20 else ""))
    if r.fresh:
        why = (f"not among the start's {K_start} classes by name or alias (models/finetune.py CLASS_ALIASES)"
               if r.by == "name" else f"the start names no classes and has {K_start}, not {len(names)}")
        logger.info("classifier rows re-initialised for %d of %d classes (weights as a fresh head's, bias at the "
                    "prior probability), %s: %s", len(r.fresh), len(names), why, _names_of(r.fresh, names))
