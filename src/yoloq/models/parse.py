"""Turn a model dict in the official YOLO schema into an ``nn.Sequential`` of layers.

The schema: ``nc``, ``depth_multiple``, ``width_multiple``, ``anchors`` and two
lists ``backbone`` and ``head`` of layers ``[from, number, module, args]``.
Arguments are resolved without ``eval``: ``nc`` and ``anchors`` name the dict's
values, ``None`` is None, and activations are written ``nn.Name(args)``.
Each layer gets the official attributes ``.i`` (index), ``.f`` (from),
``.type`` and ``.np`` (number of parameters).

The parser knows no model family: the family that claims the dict
(``yoloq.models.families.family_for``) supplies the layer table, mapping each
module name to its class and channel rule, and the head's extra kwargs.
"""

from __future__ import annotations

import ast
import math
import re

from torch import nn

from yoloq.errors import YoloqError
from yoloq.models.families import Family, LayerKind, family_for, head_classes, known_modules

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
    """Raise a YoloqError naming ``source`` unless ``d`` is a model dict some family builds."""
    required = ("nc", "depth_multiple", "width_multiple", "anchors", "backbone", "head")
    missing = [key for key in required if key not in d]
    if missing:
        raise YoloqError(f"{source}: model config lacks {', '.join(missing)}")
    known = known_modules()
    for i, layer in enumerate(d["backbone"] + d["head"]):
        if not (isinstance(layer, (list, tuple)) and len(layer) == 4):
            raise YoloqError(f"{source}: layer {i} is not [from, number, module, args]: {layer}")
        if layer[2] not in known:
            raise YoloqError(
                f"{source}: layer {i} uses unknown module {layer[2]!r} "
                f"(known: {', '.join(sorted(known))})"
            )
    _check_family_layers(d, source)


def _check_family_layers(d: dict, source: str) -> None:
    """Every module must be one of the claiming family's (only user families can differ)."""
    try:
        family = family_for(d)
    except YoloqError as e:
        raise YoloqError(f"{source}: {e}") from None
    for i, layer in enumerate(d["backbone"] + d["head"]):
        if layer[2] not in family.layers:
            raise YoloqError(
                f"{source}: layer {i} uses module {layer[2]!r}, which the {family.name} family "
                f"lacks (it has: {', '.join(sorted(family.layers))})"
            )


def parse_model(
    d: dict, ch: int = 3, anchor_grid_buffer: bool | None = None, family: Family | None = None
):
    """Build the layers of model dict ``d`` for ``ch`` input channels.

    ``family`` supplies the layer table; None means the family that claims ``d``.
    ``anchor_grid_buffer`` chooses the YOLOv7 (True) or YOLOv5 (False) layout
    of a plain ``Detect``; None leaves it to the family.
    Returns ``(nn.Sequential of layers, sorted indices of outputs to keep)``.
    """
    family = family or family_for(d)
    if d.get("activation"):
        raise YoloqError("a model-wide 'activation' override is not supported; set act per layer")
    anchors, nc = d["anchors"], d["nc"]
    na = len(anchors[0]) // 2 if isinstance(anchors, list) else anchors
    outputs_per_cell = na * (nc + 5)

    layers, save, channels = [], [], [ch]
    for i, (f, n, name, args) in enumerate(d["backbone"] + d["head"]):
        kind = family.layers[name]
        args = [resolve_arg(a, d) for a in args]
        n = max(round(n * d["depth_multiple"]), 1) if n > 1 else n
        inputs = [channels[f]] if isinstance(f, int) else [channels[x] for x in f]
        args, c2 = _layer_args(kind, args, inputs, d["width_multiple"], outputs_per_cell)
        if kind.takes_repeats:
            args.insert(2, n)
            n = 1
        is_head = kind.channels == "head"
        kwargs = family.head_kwargs(kind.cls, anchor_grid_buffer) if is_head else {}
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
    """The last layer, which must be the head of some registered family."""
    head = model[-1]
    if not isinstance(head, head_classes()):
        raise YoloqError(f"the last layer must be a detection head, got {type(head).__name__}")
    return head
