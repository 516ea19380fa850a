"""The two op tables every Q/DQ pass shares: the Q/DQ op types, and the ops a scale
passes through unchanged.

TensorRT moves Q/DQ through an op that only copies, selects or rearranges values
(Concat, MaxPool, nearest Resize, reshapes, slices): the values on either side sit on
the same grid, so the quantizers on either side must share one scale, or it inserts a
reformat. One table names each such op twice, as the ONNX op type (`yoloq lint` reads
ONNX files) and as the torch functions that export to it (the ties are found from a
traced torch model), so that the two views cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

QUANTIZE, DEQUANTIZE = "QuantizeLinear", "DequantizeLinear"
QDQ_OPS = frozenset({QUANTIZE, DEQUANTIZE})


@dataclass(frozen=True)
class TransparentOp:
    """An op whose output values are some of its input values, rearranged.

    data_input: the index of the input that carries the values (None: every input, as
        for Concat); the other inputs are shapes, indices or scales.
    torch_names: the traced torch functions and methods that export to this op.
    nearest_only: only in nearest-neighbour mode (interpolation computes new values).
    """

    onnx: str
    data_input: int | None
    torch_names: frozenset[str] = frozenset()
    nearest_only: bool = False


# fmt: off
SCALE_TRANSPARENT_OPS = (
    TransparentOp("Concat", None, frozenset({"cat", "concat", "concatenate"})),
    TransparentOp("MaxPool", 0, frozenset({
        "max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices",
        "max_pool2d_with_indices", "max_pool3d_with_indices", "adaptive_max_pool1d",
        "adaptive_max_pool2d", "adaptive_max_pool3d"})),
    TransparentOp("Resize", 0, frozenset({"interpolate", "upsample", "upsample_nearest2d"}),
                  nearest_only=True),
    TransparentOp("Upsample", 0, nearest_only=True),  # opset < 10
    TransparentOp("Reshape", 0, frozenset({"view", "reshape", "unflatten", "channel_shuffle"})),
    TransparentOp("Flatten", 0, frozenset({"flatten"})),
    TransparentOp("Squeeze", 0, frozenset({"squeeze"})),
    TransparentOp("Unsqueeze", 0, frozenset({"unsqueeze"})),
    TransparentOp("Transpose", 0, frozenset({"permute", "transpose", "t"})),
    TransparentOp("Identity", 0, frozenset({"contiguous", "clone", "detach"})),
    TransparentOp("Slice", 0, frozenset({"__getitem__", "narrow"})),
    TransparentOp("Split", 0, frozenset({"split", "chunk", "unbind"})),
    TransparentOp("Dropout", 0, frozenset({"dropout"})),
    TransparentOp("DepthToSpace", 0, frozenset({"pixel_shuffle"})),
    TransparentOp("SpaceToDepth", 0, frozenset({"pixel_unshuffle"})),
)
# fmt: on

# ONNX op type -> index of its data input (None: every input).
TRANSPARENT_ONNX = {op.onnx: op.data_input for op in SCALE_TRANSPARENT_OPS}


def torch_names(*onnx_ops: str) -> frozenset[str]:
    """The traced torch names of these ONNX ops."""
    ops = {op.onnx: op for op in SCALE_TRANSPARENT_OPS}
    return frozenset().union(*(ops[name].torch_names for name in onnx_ops))


CONCAT_TORCH = torch_names("Concat")
MAXPOOL_TORCH = torch_names("MaxPool")
RESAMPLE_TORCH = frozenset().union(
    *(op.torch_names for op in SCALE_TRANSPARENT_OPS if op.nearest_only))
# Every other transparent op keeps values whatever its arguments (reshapes, slices, copies).
RESHAPE_TORCH = frozenset().union(
    *(op.torch_names for op in SCALE_TRANSPARENT_OPS
      if op.onnx not in ("Concat", "MaxPool") and not op.nearest_only))
