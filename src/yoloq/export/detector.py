"""Export of YOLO detectors: the official input/output layout, and metadata that makes
the .onnx self-describing. (The check of ONNX Runtime against torch after export is
`yoloq.workflows.steps.check_export`: export knows no runtime.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from yoloq.errors import YoloqError
from yoloq.export.fp16 import FP16_QDQ_OPSET, convert_to_fp16
from yoloq.export.onnx import export_onnx
from yoloq.export.weights import store_int8_weights
from yoloq.files import atomic_path
from yoloq.quant.quantizer import QuantMode, iter_quantizers


class _FirstOutput(nn.Module):
    """A detector's eval output is (predictions, raw levels); the export keeps predictions."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        output = self.model(images)
        return output[0] if isinstance(output, (tuple, list)) else output


def export_detector(
    model: nn.Module,
    path: str | Path,
    img_size: int | tuple[int, int],
    opset: int = 13,
    dynamic: bool = True,
    metadata: dict[str, str] | None = None,
    fp16: bool = False,
    fp16_io: bool = False,
    int8_weights: bool = False,
) -> Path:
    """Export a YOLO detector: input `images` [batch, 3, H, W] (0..1, RGB), output
    `output` [batch, anchors, 5 + nc] as the official export with the grid.

    `dynamic`: batch, height and width are dynamic (so that evaluation can feed
    YOLOv7's rectangular batches); otherwise the shape is fixed at batch 1.

    `metadata` (e.g. names, img_size, profile) is stored in the model's
    metadata_props, so that the .onnx alone says how to run it.

    `fp16`: the float parts in FP16 (see `yoloq.export.fp16`), for TensorRT's strongly
    typed builds; a model with Q/DQ is then exported at opset 19 or newer, the first
    with FP16 scales. The input and output stay FP32 unless `fp16_io`.

    `int8_weights`: each quantized weight stored as int8 integers read through its
    DequantizeLinear (see `yoloq.export.weights`): the same outputs, a file ~4x smaller.
    """
    height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
    device = next(model.parameters()).device
    example = torch.zeros(1, 3, height, width, device=device)
    axes = {"images": {0: "batch", 2: "height", 3: "width"},
            "output": {0: "batch", 1: "anchors"}} if dynamic else None
    wrapper = _FirstOutput(model).train(model.training)  # export restores this mode after
    if fp16 and has_quantizers(model):
        opset = max(opset, FP16_QDQ_OPSET)
    # The whole file (metadata and FP16 included) is made under a temporary name and renamed
    # at the end: a failed or interrupted export never leaves a complete-looking .onnx.
    with atomic_path(path, ".onnx.tmp") as temporary:
        export_onnx(wrapper, temporary, example, opset, dynamic_batch=False, dynamic_axes=axes)
        if metadata or fp16 or int8_weights:
            proto = onnx.load(str(temporary))
            if int8_weights:
                store_int8_weights(proto)
            if fp16:
                proto, _ = convert_to_fp16(proto, keep_io_types=not fp16_io)
            props = {**(metadata or {}), **({"float_type": "fp16"} if fp16 else {})}
            onnx.helper.set_model_props(proto, {k: str(v) for k, v in props.items()})
            onnx.save(proto, str(temporary))
    return Path(path)


def has_quantizers(model: nn.Module) -> bool:
    """Whether `model` exports Q/DQ nodes (some quantizer is quantizing)."""
    return any(q.mode == QuantMode.QUANTIZING for _, q in iter_quantizers(model))


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """The ONNX model in `path` (external data not loaded); a YoloqError naming the file
    when it is missing, empty, or not an ONNX model (random bytes, a torn copy)."""
    path = Path(path)
    if not path.is_file():
        raise YoloqError(f"ONNX model not found: {path}")
    if path.stat().st_size == 0:
        raise YoloqError(f"{path}: empty file, not an ONNX model")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError) as error:  # protobuf's, onnx's and the disk's
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise YoloqError(f"{path}: cannot read as ONNX, corrupt or truncated? ({reason})") from None
    if not proto.graph.node:  # protobuf parses some garbage as an empty message
        raise YoloqError(f"{path}: cannot read as ONNX (no graph in it)")
    return proto


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata_props of an ONNX file (see `load_onnx` for the errors)."""
    return {prop.key: prop.value for prop in load_onnx(path).metadata_props}


def output_grid_step(proto: onnx.ModelProto) -> float | None:
    """The grid step of the model's first output where a DequantizeLinear writes it (its
    scale; the finest one if per channel), else None: the output is float."""
    graph = proto.graph
    producers = {name: node for node in graph.node for name in node.output}
    node = producers.get(graph.output[0].name)
    while node is not None and node.op_type == "Identity":  # names the output, no math
        node = producers.get(node.input[0])
    if node is None or node.op_type != "DequantizeLinear":
        return None
    scale = _constant(graph, producers, node.input[1])
    return float("nan") if scale is None else float(np.min(scale))


def _constant(graph: onnx.GraphProto, producers: dict, name: str) -> np.ndarray | None:
    for initializer in graph.initializer:
        if initializer.name == name:
            return numpy_helper.to_array(initializer)
    node = producers.get(name)
    if node is not None and node.op_type == "Constant":
        value = onnx.helper.get_attribute_value(node.attribute[0])
        return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else (
            np.asarray(value))
    return None


def detector_metadata(names, img_size: int, stride: int, precision: str,
                      profile: str | None) -> dict[str, str]:
    """What a runtime needs to know to run an exported detector."""
    return {"names": json.dumps(list(names)), "img_size": str(img_size), "stride": str(stride),
            "precision": precision, "profile": profile or "", "producer": "yoloq"}
