"""The two op tables every Q/DQ pass shares: the Q/DQ op types, and the ops a scale
passes through unchanged.

TensorRT moves Q/DQ through an op that only copies, selects or rearranges values
(Concat, MaxPool, nearest Resize, zero padding, reshapes, slices): the values on either
side sit on the same grid, so the quantizers on either side must share one scale, or it
inserts a reformat. One table names each such op twice, as the ONNX op type (`yoloq lint` reads
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
        for Concat; traced, every tensor of the list argument); the other inputs are
        shapes, indices or scales.
    torch_names: the traced torch functions and methods that export to this op.
    nearest_only: only in nearest-neighbour mode (interpolation computes new values).
    zero_fill_only: Pad: in constant mode only with the value 0. A padded zero is exact
        on every symmetric grid (the integer 0, or the zero point of uint8 storage) and
        inside every range, so the output holds input values and exact zeros; any other
        constant is in general off the grid or past amax: a new value. The other modes
        (reflect, edge / replicate, wrap / circular) copy input values.
    """

    onnx: str
    data_input: int | None
    torch_names: frozenset[str] = frozenset()
    nearest_only: bool = False
    zero_fill_only: bool = False


# fmt: off
SCALE_TRANSPARENT_OPS = (
    # torch.stack exports as an Unsqueeze of each input and a Concat: both in this table.
    TransparentOp("Concat", None, frozenset({"cat", "concat", "concatenate", "stack"})),
    TransparentOp("MaxPool", 0, frozenset({
        "max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices",
        "max_pool2d_with_indices", "max_pool3d_with_indices", "adaptive_max_pool1d",
        "adaptive_max_pool2d", "adaptive_max_pool3d"})),
    # F.upsample, F.upsample_nearest and nn.Upsample trace as interpolate; the ATen
    # upsample_nearest*d ops, called directly, are nearest by name.
    TransparentOp("Resize", 0, frozenset({"interpolate", "upsample_nearest1d",
                                          "upsample_nearest2d", "upsample_nearest3d"}),
                  nearest_only=True),
    TransparentOp("Upsample", 0, nearest_only=True),  # opset < 10
    TransparentOp("Pad", 0, frozenset({"pad"}), zero_fill_only=True),  # F.pad, nn.*Pad*d
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

# ONNX op type -> its entry, and -> index of its data input (None: every input).
TRANSPARENT = {op.onnx: op for op in SCALE_TRANSPARENT_OPS}
TRANSPARENT_ONNX = {op.onnx: op.data_input for op in SCALE_TRANSPARENT_OPS}
# Resize modes that copy values: nearest-exact only rounds source coordinates otherwise.
NEAREST_MODES = frozenset({"nearest", "nearest-exact"})


def torch_names(*onnx_ops: str) -> frozenset[str]:
    """The traced torch names of these ONNX ops."""
    return frozenset().union(*(TRANSPARENT[name].torch_names for name in onnx_ops))


def _names_where(selects) -> frozenset[str]:
    return frozenset().union(*(op.torch_names for op in SCALE_TRANSPARENT_OPS if selects(op)))


CONCAT_TORCH = torch_names("Concat")
MAXPOOL_TORCH = torch_names("MaxPool")
RESAMPLE_TORCH = _names_where(lambda op: op.nearest_only)
PAD_TORCH = _names_where(lambda op: op.zero_fill_only)
# Traced ops whose values come from every tensor of their list argument.
LIST_INPUT_TORCH = _names_where(lambda op: op.data_input is None)
# Every other transparent op keeps values whatever its arguments (reshapes, slices, copies).
RESHAPE_TORCH = _names_where(
    lambda op: op.onnx not in ("Concat", "MaxPool") and not op.nearest_only
    and not op.zero_fill_only)
