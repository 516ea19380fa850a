"""ONNX export of a (fake-)quantized torch model.

Quantizers in quantizing mode export as QuantizeLinear/DequantizeLinear pairs
(per-channel ones with their `axis`); disabled quantizers export as nothing. One with
fewer than 8 bits clamps its input to its own range first (QuantizeLinear saturates to 8
bits only): a Clip in front of an activation's Q; on a weight the clamp is evaluated
here, so that the Q reads the clamped weight as a stored tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn
from onnx import numpy_helper

from yoloq.files import atomic_path
from yoloq.quant.quantizer import QuantMode, iter_quantizers

MIN_OPSET = 13  # per-channel QuantizeLinear (the `axis` attribute) arrived in opset 13


def export_onnx(
    model: nn.Module,
    path: str | Path,
    example: torch.Tensor,
    opset: int = 13,
    dynamic_batch: bool = True,
    input_names: Sequence[str] = ("images",),
    output_names: Sequence[str] = ("output",),
    dynamic_axes: dict[str, dict[int, str]] | None = None,
) -> Path:
    """Export `model` (in eval mode) traced on `example`; check the result with onnx.checker.

    `dynamic_batch` makes axis 0 of every input and output dynamic; `dynamic_axes`
    (torch.onnx's format) replaces that with any other choice.

    The file is written to a temporary name and renamed, so a failed export never
    leaves a half-written model behind.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old for per-channel Q/DQ; use {MIN_OPSET} or newer")
    _check_calibrated(model)
    path = Path(path)
    axes = {name: {0: "batch"} for name in (*input_names, *output_names)}
    if dynamic_axes is not None:
        axes, dynamic_batch = dynamic_axes, True
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), atomic_path(path) as temporary:
            torch.onnx.export(
                model, (example,), str(temporary), opset_version=opset, dynamo=False,
                input_names=list(input_names), output_names=list(output_names),
                dynamic_axes=axes if dynamic_batch else None, do_constant_folding=True,
            )
            _fold_constant_clamps(str(temporary))
            onnx.checker.check_model(str(temporary))
    finally:
        model.train(was_training)
    return path


def _check_calibrated(model: nn.Module) -> None:
    for path, quantizer in iter_quantizers(model):
        if quantizer.mode == QuantMode.CALIBRATING:
            raise ValueError(f"quantizer {path} is still calibrating; finish calibration first")
        if quantizer.mode == QuantMode.QUANTIZING and quantizer.amax is None:
            raise ValueError(f"quantizer {path} has no amax; calibrate the model before export")


def _clip(values: list) -> np.ndarray:
    data, low, high = (values + [None, None])[:3]  # min and max are optional inputs
    return np.clip(data, low, high)


# The clamps of sub-8-bit weights (see TensorQuantizer._fake_quantize), which torch's
# constant folding leaves in the graph.
_CLAMPS = {
    "Max": lambda values: reduce(np.maximum, values),
    "Min": lambda values: reduce(np.minimum, values),
    "Clip": _clip,
}


def constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Every initializer and Constant output of `graph`, by name, as an array (tensors
    stored as external data, in models over 2 GB, are left out)."""
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer
              if init.data_location != onnx.TensorProto.EXTERNAL}
    values.update({node.output[0]: numpy_helper.to_array(node.attribute[0].t)
                   for node in graph.node if node.op_type == "Constant" and node.attribute
                   and node.attribute[0].name == "value"})
    return values


def readers_of(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """For every tensor name, the nodes that read it."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def _fold_constant_clamps(path: str) -> None:
    """Replace every Max / Min / Clip whose inputs are all constants by its value, so that
    a weight's Q reads a stored tensor (TensorRT and `yoloq lint` tell weights by that).
    Tensors stored as external data (models over 2 GB) are left as they are."""
    proto = onnx.load(path, load_external_data=False)
    values = constant_values(proto.graph)
    origin, folded, kept = {}, {}, []
    for node in proto.graph.node:  # in topological order: a Max feeding a Min folds too
        names = list(node.input)
        if node.op_type in _CLAMPS and all(not name or name in values for name in names):
            result = _CLAMPS[node.op_type]([values[name] if name else None for name in names])
            values[node.output[0]] = folded[node.output[0]] = result
            origin[node.output[0]] = origin.get(names[0], names[0])
        else:
            kept.append(node)
    if folded:
        consumed = {name for node in proto.graph.node if node.output[0] in folded
                    for name in node.input if name}
        _store_folded(proto.graph, kept, folded, origin, consumed)
        onnx.save(proto, path)


def _store_folded(graph: onnx.GraphProto, kept: list, folded: dict, origin: dict,
                  consumed: set) -> None:
    """Keep the `kept` nodes, store the folded tensors they read as initializers, and drop
    the initializers and Constants that only the folded nodes read. A folded weight takes
    the name of the weight it was computed from, where nothing else reads that one."""
    read = {name for node in kept for name in node.input} | {out.name for out in graph.output}
    stale = consumed - read
    names: dict[str, str] = {}
    for name in (name for name in folded if name in read):
        source = origin[name]
        names[name] = source if source in stale and source not in names.values() else name
    for node in kept:
        renamed = [names.get(name, name) for name in node.input]
        del node.input[:]
        node.input.extend(renamed)
    nodes = [node for node in kept if node.op_type != "Constant" or node.output[0] not in stale]
    stored = [init for init in graph.initializer if init.name not in stale]
    stored += [numpy_helper.from_array(folded[name], new) for name, new in names.items()]
    del graph.node[:], graph.initializer[:]
    graph.node.extend(nodes)
    graph.initializer.extend(stored)
