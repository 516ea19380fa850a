"""The YOLOv5 (v7.0) family: configs that name only the shared blocks and ``Detect``.

Every family file has the same four sections, in this order: (1) layer list,
(2) modules, (3) head and decode, (4) checkpoint mapping; it ends with its
``Family`` record, which ``yoloq.models.families`` registers.
"""

from __future__ import annotations

from torch import nn

from yoloq.models.common import is_folded_conv
from yoloq.models.families.base import SHARED_LAYERS, Family, LayerKind, config_modules
from yoloq.models.heads import Detect

# --- (1) Layer list: module name in configs -> how the parser builds it. ---
# Functions, as in every family file, so that a table can name classes defined further down.


def layer_list() -> dict[str, LayerKind]:
    """The shared layers and the shared ``Detect``: YOLOv5 adds no layer of its own."""
    return {**SHARED_LAYERS, "Detect": LayerKind(Detect, "head")}


def claims(cfg: dict) -> bool:
    """A config is YOLOv5's when it names nothing but YOLOv5's layers.

    Any layer of another family (YOLOv7's MP, RepConv, IDetect, ...) makes the
    config that family's, and a layer no family knows fails validation first.
    """
    return config_modules(cfg) <= layer_list().keys()


# --- (2) Modules: none of its own. ---
# Conv, Bottleneck, C3 and SPPF are YOLOv5's blocks, but YOLOv7 configs name
# them too, so they live in yoloq.models.common.


# --- (3) Head and decode: the shared Detect, in YOLOv5 v7.0's buffer layout. ---


def head_kwargs(cls: type, anchor_grid_buffer: bool | None) -> dict:
    """YOLOv5 v7.0's Detect has no ``anchor_grid`` buffer (its anchor sizes come from
    ``anchors * stride``), unless the checkpoint being loaded stores one."""
    if cls is not Detect:
        return {}
    return {"anchor_grid_buffer": False if anchor_grid_buffer is None else anchor_grid_buffer}


# --- (4) Checkpoint mapping: which blocks a checkpoint stores already fused. ---


def match_fused_layout(model: nn.Module, state: dict, pickled_by_name: dict) -> None:
    """YOLOv5's ``fuse()`` folds only Conv blocks; a folded one has no ``bn`` keys."""
    for name, module in model.named_modules():
        if is_folded_conv(name, module, state):
            module.fuse()


YOLOV5 = Family(
    name="yolov5",
    layers=layer_list(),
    claims=claims,
    head_kwargs=head_kwargs,
    match_fused_layout=match_fused_layout,
)
