"""The ``Family`` record, the layer kinds of the config parser, and the layers all families share.

A family is everything the generic builder (``yoloq.models.parse``) and the
generic checkpoint loader (``yoloq.models.checkpoint``) cannot know by
themselves: which module names its configs may use, how to tell its configs
from the others', how its head is constructed, and which of its blocks an
official checkpoint stores already fused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from torch import nn

from yoloq.models.common import C3, SPPF, Bottleneck, Concat, Conv


@dataclass(frozen=True)
class LayerKind:
    """How the builder treats a module: its class and its channel rule."""

    cls: Callable[..., nn.Module]
    channels: str  # "conv": args[0] is c2 (scaled); "concat", "shortcut", "reorg", "head", "same"
    takes_repeats: bool = False  # the repeat count goes into the args instead of stacking copies


def no_head_kwargs(cls: type, anchor_grid_buffer: bool | None) -> dict:
    """The default ``head_kwargs``: the head is built from its config arguments alone."""
    return {}


def nothing_stored_fused(model: nn.Module, state: dict, pickled_by_name: dict) -> None:
    """The default ``match_fused_layout``: checkpoints of the family store nothing fused."""


@dataclass(frozen=True)
class Family:
    """One model family (YOLOv5, YOLOv7, ...): what the generic builder and loader ask of it.

    name: the registry key, e.g. ``"yolov7"``.
    layers: module name as written in configs -> ``LayerKind`` (read-only).
    claims: ``claims(cfg)`` is True when the model dict belongs to the family;
        the claims of the registered families must not overlap.
    head_kwargs: ``head_kwargs(cls, anchor_grid_buffer)`` -> extra constructor
        kwargs for a layer of kind "head"; ``anchor_grid_buffer`` is None, or
        what a checkpoint being loaded stores.
    match_fused_layout: ``match_fused_layout(model, state, pickled_by_name)``
        fuses, in place, the blocks that the checkpoint's ``state`` stores
        already fused (``pickled_by_name``: module path -> pickled object).
    """

    name: str
    layers: Mapping[str, LayerKind]
    claims: Callable[[dict], bool]
    head_kwargs: Callable[[type, bool | None], dict] = no_head_kwargs
    match_fused_layout: Callable[[nn.Module, dict, dict], None] = nothing_stored_fused

    def __post_init__(self):
        # A copy behind a read-only view: the table cannot change after registration.
        object.__setattr__(self, "layers", MappingProxyType(dict(self.layers)))


def config_modules(cfg: dict) -> set[str]:
    """The module names that a model dict's layers use."""
    return {layer[2] for layer in cfg["backbone"] + cfg["head"]}


# Layers that every family's configs may name: the blocks of ``yoloq.models.common`` and the
# torch modules the official configs write as ``nn.Name``. The head is not
# shared: each family maps its own head names.
SHARED_LAYERS: dict[str, LayerKind] = {
    "Conv": LayerKind(Conv, "conv"),
    "Bottleneck": LayerKind(Bottleneck, "conv"),
    "C3": LayerKind(C3, "conv", takes_repeats=True),
    "SPPF": LayerKind(SPPF, "conv"),
    "nn.Conv2d": LayerKind(nn.Conv2d, "conv"),
    "nn.BatchNorm2d": LayerKind(nn.BatchNorm2d, "batchnorm"),
    "Concat": LayerKind(Concat, "concat"),
    "nn.Upsample": LayerKind(nn.Upsample, "same"),
    "nn.MaxPool2d": LayerKind(nn.MaxPool2d, "same"),
}
