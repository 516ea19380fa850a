"""Groups of quantizers that must share one scale for TensorRT, found by small named
passes over a recorded dataflow (PPQ style), joined with a union-find.

TensorRT moves a Q node backward through ops that only move values around
(Concat and stack, MaxPool, nearest Upsample, zero padding, reshapes, slices; the table
is `yoloq.graph.ops`) into the producer of each input, and forward from a tensor to
all its readers. Wherever the quantizers reached that way disagree, it inserts a
reformat layer. So a group is every quantizer connected to another through such ops:
the quantizers reading a Concat's inputs with those reading its output, a MaxPool's
input quantizer with those reading its output, quantizers reading one tensor. Any
other op (a Conv, an activation, an Add) changes values and ends the connection, so no
group crosses it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn as nn

from yoloq.graph.ops import (
    CONCAT_TORCH,
    MAXPOOL_TORCH,
    NEAREST_MODES,
    PAD_TORCH,
    RESAMPLE_TORCH,
    RESHAPE_TORCH,
)
from yoloq.graph.trace import Dataflow, OpRecord, trace_dataflow
from yoloq.graph.unionfind import UnionFind


@dataclass(frozen=True)
class ScaleGroup:
    """Quantizer paths that must share one amax; `leader` is the first in module order."""

    leader: str
    members: tuple[str, ...]

    @property
    def followers(self) -> tuple[str, ...]:
        return tuple(m for m in self.members if m != self.leader)

    def to_dict(self) -> dict:
        return {"leader": self.leader, "members": list(self.members)}


# A pass joins dataflow nodes that must share a scale. Nodes are ("tensor", key) and
# ("quantizer", path).
Pass = Callable[[Dataflow, UnionFind], None]


def share_tensor_readers(flow: Dataflow, sets: UnionFind) -> None:
    """Quantizers that read the same tensor: TensorRT stores one int8 copy of it."""
    for path, keys in flow.quantizer_reads.items():
        for key in keys:
            sets.union(("quantizer", path), ("tensor", key))


def share_concat_scales(flow: Dataflow, sets: UnionFind) -> None:
    """A Concat's (or stack's) inputs and its output: int8 concatenation copies bytes,
    one scale."""
    _join_through(flow, sets, lambda op: op.name in CONCAT_TORCH)


def share_maxpool_scales(flow: Dataflow, sets: UnionFind) -> None:
    """A MaxPool's input and output: max commutes with quantization."""
    _join_through(flow, sets, lambda op: op.name in MAXPOOL_TORCH)


def share_through_reshapes(flow: Dataflow, sets: UnionFind) -> None:
    """Nearest upsampling, zero padding, reshapes, slices and identities keep values."""
    _join_through(flow, sets, _keeps_values)


def _keeps_values(op: OpRecord) -> bool:
    """A resample in nearest mode, a pad that copies values or pads zeros (see
    `TransparentOp.zero_fill_only`), or any reshape, slice or copy."""
    if op.name in RESAMPLE_TORCH:
        return op.mode in NEAREST_MODES
    if op.name in PAD_TORCH:
        return op.mode != "constant" or op.fill == 0
    return op.name in RESHAPE_TORCH


def _join_through(flow: Dataflow, sets: UnionFind, selects: Callable[[OpRecord], bool]):
    for op in flow.ops:
        if selects(op) and op.data:
            for key in (*op.data[1:], *op.outputs):
                sets.union(("tensor", op.data[0]), ("tensor", key))


PASSES: tuple[Pass, ...] = (
    share_tensor_readers,
    share_concat_scales,
    share_maxpool_scales,
    share_through_reshapes,
)


# For ONNX Runtime's QDQ fusions (the ort profile, whose layers quantize their outputs
# too): it drops a DequantizeLinear / QuantizeLinear pair around a MaxPool, a nearest
# Resize or a reshape only where both have one scale and zero point, and a tensor that
# two quantizers read is requantized between them. Its QLinearConcat takes inputs of
# any scale, so a Concat needs no shared one.
ORT_PASSES: tuple[Pass, ...] = (
    share_tensor_readers,
    share_maxpool_scales,
    share_through_reshapes,
)


def scale_groups(flow: Dataflow, passes: Iterable[Pass] = PASSES) -> list[ScaleGroup]:
    """Run the passes and return the groups of two or more quantizers, in module order."""
    sets = UnionFind()
    for run_pass in passes:
        run_pass(flow, sets)
    rank = {path: index for index, path in enumerate(flow.quantizer_order)}
    groups = []
    for nodes in sets.sets():
        members = sorted((name for kind, name in nodes if kind == "quantizer"), key=rank.get)
        if len(members) > 1:
            groups.append(ScaleGroup(members[0], tuple(members)))
    return sorted(groups, key=lambda group: rank[group.leader])


def find_scale_groups(
    model: nn.Module, example: torch.Tensor, passes: Iterable[Pass] = PASSES
) -> list[ScaleGroup]:
    """The groups of activation quantizers in a quantized `model` that TensorRT needs to
    share one scale, from one recorded forward pass on `example` (small is enough). Any
    torch module works (a YOLO, a torchvision classifier, plain functional code).

    Example::

        model, _ = quantize(model, profile_config("trt"))
        for group in find_scale_groups(model, torch.zeros(1, 3, 64, 64)):
            print(group.leader, group.followers)
    """
    return scale_groups(trace_dataflow(model, example), passes)
