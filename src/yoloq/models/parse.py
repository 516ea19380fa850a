"""Turn a model dict in the official YOLO schema into an ``nn.Sequential`` of layers.

The schema: ``nc``, ``depth_multiple``, ``width_multiple``, ``anchors`` and two
lists ``backbone`` and ``head`` of layers ``[from, number, module, args]``.
Arguments are resolved without ``eval``: ``nc`` and ``anchors`` name the dict's
values, ``None`` is None, and activations are written ``nn.Name(args)``.
Each layer gets the official attributes ``.i`` (index), ``.f`` (from),
``.type`` and ``.np`` (number of parameters).
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from yoloq.errors import YoloqError
from yoloq.models import common
from yoloq.models.heads import DETECTION_HEADS, Detect, IAuxDetect, IDetect


@dataclass(frozen=True)
class LayerKind:
    """How the builder treats a module: its class and its channel rule."""

    cls: Callable[..., nn.Module]
    channels: str  # "conv": args[0] is c2 (scaled); "concat", "shortcut", "reorg", "head", "same"
    takes_repeats: bool = False  # the repeat count goes into the args instead of stacking copies


MODULES: dict[str, LayerKind] = {
    "Conv": LayerKind(common.Conv, "conv"),
    "RepConv": LayerKind(common.RepConv, "conv"),
    "Bottleneck": LayerKind(common.Bottleneck, "conv"),
    "C3": LayerKind(common.C3, "conv", takes_repeats=True),
    "SPPF": LayerKind(common.SPPF, "conv"),
    "SPPCSPC": LayerKind(common.SPPCSPC, "conv", takes_repeats=True),
    "DownC": LayerKind(common.DownC, "conv", takes_repeats=True),
    "nn.Conv2d": LayerKind(nn.Conv2d, "conv"),
    "nn.BatchNorm2d": LayerKind(nn.BatchNorm2d, "batchnorm"),
    "Concat": LayerKind(common.Concat, "concat"),
    "Shortcut": LayerKind(common.Shortcut, "shortcut"),
    "ReOrg": LayerKind(common.ReOrg, "reorg"),
    "MP": LayerKind(common.MP, "same"),
    "SP": LayerKind(common.SP, "same"),
    "nn.Upsample": LayerKind(nn.Upsample, "same"),
    "nn.MaxPool2d": LayerKind(nn.MaxPool2d, "same"),
    "Detect": LayerKind(Detect, "head"),
    "IDetect": LayerKind(IDetect, "head"),
    "IAuxDetect": LayerKind(IAuxDetect, "head"),
}

# Modules that only YOLOv7 configs use: their presence means ``Detect`` is YOLOv7's
# (with an ``anchor_grid`` buffer) rather than YOLOv5 v7.0's.
YOLOV7_MODULES = {"MP", "SP", "SPPCSPC", "RepConv", "ReOrg", "DownC", "Shortcut"}
YOLOV7_MODULES |= {"IDetect", "IAuxDetect"}

ACTIVATIONS = {
    "SiLU": nn.SiLU,
    "ReLU": nn.ReLU,
    "ReLU6": nn.ReLU6,
    "LeakyReLU": nn.LeakyReLU,
    "Hardswish": nn.Hardswish,
    "Mish": nn.Mish,
    "GELU": nn.GELU,
    "Sigmoid": nn.Sigmoid,
    "Identity": nn.Identity,
}
_ACTIVATION_PATTERN = re.compile(r"^(?:torch\.)?nn\.(\w+)\((.*)\)$")


def make_divisible(x: float, divisor: int = 8) -> int:
    """Smallest multiple of ``divisor`` that is >= ``x`` (the official channel rounding)."""
    return math.ceil(x / divisor) * divisor


def parse_activation(text: str) -> nn.Module:
    """``'nn.LeakyReLU(0.1)'`` -> ``nn.LeakyReLU(0.1)``, for the activations YOLO configs use."""
    match = _ACTIVATION_PATTERN.match(text.replace(" ", ""))
    if not match or match.group(1) not in ACTIVATIONS:
        raise YoloqError(f"unsupported activation {text!r} (known: {', '.join(ACTIVATIONS)})")
    args = ast.literal_eval(f"({match.group(2)},)") if match.group(2) else ()
    return ACTIVATIONS[match.group(1)](*args)


def is_yolov7(d: dict) -> bool:
    """Whether the config is a YOLOv7 one (decides the layout of ``Detect``)."""
    return any(layer[2] in YOLOV7_MODULES for layer in d["backbone"] + d["head"])


def resolve_arg(value, d: dict):
    """One YAML argument: names of the dict's values, ``None`` and activations become objects."""
    if not isinstance(value, str):
        return value
    if value in ("nc", "anchors"):
        return d[value]
    if value == "None":
        return None
    if value in ("True", "False"):
        return value == "True"
    if _ACTIVATION_PATTERN.match(value.replace(" ", "")):
        return parse_activation(value)
    return value  # a plain string argument, e.g. Upsample's 'nearest'


def validate_model_dict(d: dict, source: str) -> None:
    required = ("nc", "depth_multiple", "width_multiple", "anchors", "backbone", "head")
    missing = [key for key in required if key not in d]
    if missing:
        raise YoloqError(f"{source}: model config lacks {', '.join(missing)}")
    for i, layer in enumerate(d["backbone"] + d["head"]):
        if not (isinstance(layer, (list, tuple)) and len(layer) == 4):
            raise YoloqError(f"{source}: layer {i} is not [from, number, module, args]: {layer}")
        if layer[2] not in MODULES:
            known = ", ".join(sorted(MODULES))
            raise YoloqError(
                f"{source}: layer {i} uses unknown module {layer[2]!r} (known: {known})"
            )


def parse_model(d: dict, ch: int = 3, anchor_grid_buffer: bool | None = None):
    """Build the layers of model dict ``d`` for ``ch`` input channels.

    ``anchor_grid_buffer`` chooses the YOLOv7 (True) or YOLOv5 (False) layout
    of a plain ``Detect``; None decides from the config's modules.
    Returns ``(nn.Sequential of layers, sorted indices of outputs to keep)``.
    """
    if anchor_grid_buffer is None:
        anchor_grid_buffer = is_yolov7(d)
    if d.get("activation"):
        raise YoloqError("a model-wide 'activation' override is not supported; set act per layer")
    anchors, nc = d["anchors"], d["nc"]
    na = len(anchors[0]) // 2 if isinstance(anchors, list) else anchors
    outputs_per_cell = na * (nc + 5)

    layers, save, channels = [], [], [ch]
    for i, (f, n, name, args) in enumerate(d["backbone"] + d["head"]):
        kind = MODULES[name]
        args = [resolve_arg(a, d) for a in args]
        n = max(round(n * d["depth_multiple"]), 1) if n > 1 else n
        inputs = [channels[f]] if isinstance(f, int) else [channels[x] for x in f]
        args, c2 = _layer_args(kind, args, inputs, d["width_multiple"], outputs_per_cell)
        if kind.takes_repeats:
            args.insert(2, n)
            n = 1
        kwargs = {"anchor_grid_buffer": anchor_grid_buffer} if kind.cls is Detect else {}
        module = _instantiate(kind.cls, args, kwargs, n)
        module.i, module.f, module.type = i, f, name
        module.np = sum(p.numel() for p in module.parameters())
        layers.append(module)
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        if i == 0:
            channels = []
        channels.append(c2)
    return nn.Sequential(*layers), sorted(save)


def _layer_args(kind: LayerKind, args: list, inputs: list[int], width: float, no: int):
    """Constructor args and output channels of one layer (the official channel rules)."""
    c1 = inputs[0]
    if kind.channels == "conv":
        c2 = args[0] if args[0] == no else make_divisible(args[0] * width, 8)
        return [c1, c2, *args[1:]], c2
    if kind.channels == "batchnorm":
        return [c1], c1
    if kind.channels == "concat":
        return args, sum(inputs)
    if kind.channels == "reorg":
        return args, 4 * c1
    if kind.channels == "head":
        args = [*args, inputs]
        if isinstance(args[1], int):  # a number of anchors per level instead of a list
            args[1] = [list(range(args[1] * 2))] * len(inputs)
        return args, None
    return args, c1  # "shortcut" and "same": channels pass through


def _instantiate(cls, args: list, kwargs: dict, n: int) -> nn.Module:
    try:
        if n > 1:
            return nn.Sequential(*(cls(*args, **kwargs) for _ in range(n)))
        return cls(*args, **kwargs)
    except (TypeError, ValueError) as e:
        raise YoloqError(f"cannot build {cls.__name__}{tuple(args)}: {e}") from None


def find_head(model: nn.Sequential) -> nn.Module:
    head = model[-1]
    if not isinstance(head, DETECTION_HEADS):
        raise YoloqError(f"the last layer must be a detection head, got {type(head).__name__}")
    return head
