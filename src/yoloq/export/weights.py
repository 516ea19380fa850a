"""INT8 weights on disk: a quantized weight stored as its int8 integers, read through its
DequantizeLinear, in place of the float weight and the QuantizeLinear in front of it.

The graph computes the same numbers (the integers are what that QuantizeLinear would
produce), in a file about 4x smaller. ONNX Runtime and OpenVINO fold either form into
their int8 kernels; TensorRT's explicit-quantization rules accept both (a weight may
be a constant int8 tensor feeding a DequantizeLinear), but yoloq's trt profile keeps
float weights by default until a TensorRT build has checked this form.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from yoloq.export.onnx import constant_values, readers_of


def store_int8_weights(proto: onnx.ModelProto) -> int:
    """Quantize every constant that a QuantizeLinear reads, in place; the number of
    weights so stored. Tensors kept as external data (models over 2 GB) stay float."""
    graph = proto.graph
    constants = constant_values(graph)
    readers = readers_of(graph)
    replaced: dict[str, str] = {}  # a Q's output -> the int8 initializer that replaces it
    stored = []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or not _all_known(node.input, constants):
            continue
        if any(reader.op_type != "DequantizeLinear" for reader in readers[node.output[0]]):
            continue  # the integers are read by something else: leave the pair alone
        integers = quantize_like_onnx(*(constants.get(name) for name in _inputs(node)),
                                      axis=_axis(node))
        name = f"{node.input[0]}_int8"
        stored.append(numpy_helper.from_array(integers, name))
        replaced[node.output[0]] = name
    if not replaced:
        return 0
    _rewire(graph, replaced, stored)
    return len(replaced)


def quantize_like_onnx(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None,
                       axis: int = 1) -> np.ndarray:
    """ONNX QuantizeLinear: saturate(round_half_even(x / scale) + zero_point), the division
    in float32 as ONNX Runtime does it, so that its result is unchanged bit for bit."""
    x = x.astype(np.float32)
    scale = np.asarray(scale, dtype=np.float32)
    dtype = np.uint8 if zero_point is None else zero_point.dtype
    zero = np.zeros_like(scale, dtype=np.int32) if zero_point is None else zero_point.astype(
        np.int32)
    if scale.ndim == 1 and scale.size > 1:  # per channel along `axis`
        shape = [1] * x.ndim
        shape[axis % x.ndim] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    info = np.iinfo(dtype)
    values = np.rint(x / scale) + zero
    return np.clip(values, info.min, info.max).astype(dtype)


def _inputs(node) -> list[str]:
    names = list(node.input)
    return names + [""] * (3 - len(names))  # the zero point is optional


def _all_known(names, constants: dict) -> bool:
    return all(not name or name in constants for name in names) and names[0] in constants


def _axis(node) -> int:
    return next((attr.i for attr in node.attribute if attr.name == "axis"), 1)


def _rewire(graph: onnx.GraphProto, replaced: dict[str, str], stored: list) -> None:
    """Point each DequantizeLinear at its int8 initializer; drop the QuantizeLinear nodes
    and the float weights and Constants that nothing reads any more."""
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in replaced:
                node.input[index] = replaced[name]
    nodes = [node for node in graph.node
             if not (node.op_type == "QuantizeLinear" and node.output[0] in replaced)]
    read = {name for node in nodes for name in node.input} | {out.name for out in graph.output}
    nodes = [node for node in nodes if node.op_type != "Constant" or node.output[0] in read]
    initializers = [init for init in graph.initializer if init.name in read] + stored
    del graph.node[:], graph.initializer[:]
    graph.node.extend(nodes)
    graph.initializer.extend(initializers)
