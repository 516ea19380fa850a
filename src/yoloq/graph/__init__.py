"""TensorRT-aware Q/DQ placement: the dataflow of a quantized model, the groups of
quantizers that must share one scale, how they are tied, and a lint for any Q/DQ ONNX."""

from yoloq.graph.groups import (
    ORT_PASSES,
    PASSES,
    ScaleGroup,
    find_scale_groups,
    scale_groups,
    share_concat_scales,
    share_maxpool_scales,
    share_tensor_readers,
    share_through_reshapes,
)
from yoloq.graph.tie import apply_ties, quantizer_ties, tie_quantizers, tied_groups
from yoloq.graph.trace import Dataflow, trace_dataflow

__all__ = [
    "ORT_PASSES",
    "PASSES",
    "Dataflow",
    "ScaleGroup",
    "apply_ties",
    "find_scale_groups",
    "quantizer_ties",
    "scale_groups",
    "share_concat_scales",
    "share_maxpool_scales",
    "share_tensor_readers",
    "share_through_reshapes",
    "tie_quantizers",
    "tied_groups",
    "trace_dataflow",
]
