"""What a YOLO detector supplies to the sensitivity algorithm (`yoloq.sensitivity`): its
units (the top-level layers `model.N`, or each quantized module) and the proxy error
of its raw head outputs against the float model's."""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
import torch.nn as nn

from yoloq.errors import YoloqError
from yoloq.sensitivity import Regroup, Units, squared_error, units_by_path

GRANULARITIES = ("layer", "module")
LAYER_DEPTH = 2  # "model.17": the official layer index, as users' ignore patterns name it


def yolo_units(model: nn.Module, granularity: str = "layer", regroup: Regroup | None = None,
               only: Iterable[str] | None = None) -> Units:
    """The call sites of a quantized YOLO model by layer (`model.17`) or by quantized
    module (`model.17.conv`), in model order; each switches float exactly as its
    `ignore_patterns` line does (`regroup` calibrates what stays of a tied group).
    `only`: these units alone (the other sites stay as they are)."""
    if granularity not in GRANULARITIES:
        raise YoloqError(f"unknown granularity {granularity!r}; use one of {GRANULARITIES}")
    return units_by_path(model, LAYER_DEPTH if granularity == "layer" else None, regroup,
                         only)


def ignore_patterns(units: Iterable[str], granularity: str) -> list[str]:
    """Regexes (for `--ignore-file`) that keep these units float: a layer's own module
    (`model.17`, e.g. a MaxPool) and everything under it; a module alone."""
    suffix = r"(\.|$)" if granularity == "layer" else "$"
    return [re.escape(unit) + suffix for unit in units]


def detection_error(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Summed error of a YOLO level's predictions (last dim: x, y, w, h, obj, classes),
    in the sigmoid space its decode works in.

    Raw logits weigh the many background anchors, saturated far below zero, as much as
    the few that detect something; mAP does not. So: the objectness error everywhere,
    and the box and class errors where the float model sees an object (weighted by its
    objectness).
    """
    student, teacher = out.sigmoid(), ref.sigmoid()
    objectness = teacher[..., 4]
    squared = (student - teacher) ** 2
    box_and_class = squared[..., :4].sum(-1) + squared[..., 5:].sum(-1)
    return torch.sum(squared[..., 4] + objectness * box_and_class)


def is_detector_output(output) -> bool:
    """A YOLO eval output: (predictions, [raw level, ...])."""
    return isinstance(output, (tuple, list)) and len(output) == 2 and isinstance(output[1], list)


def detector_output_error(model: nn.Module, images: torch.Tensor,
                          reference) -> list[tuple[float, int]]:
    """`detection_error` per raw level, counted per anchor; a model that is no detector
    gets the plain squared error of its outputs."""
    if not is_detector_output(reference):
        return squared_error(model, images, reference)
    _, levels = model(images)
    return [(detection_error(out.float(), ref.float()).item(), ref[..., 0].numel())
            for out, ref in zip(levels, reference[1])]
