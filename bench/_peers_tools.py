"""The quantization tools yoloq is compared with, each from a float model to an INT8 ONNX.

Every function takes the same calibration batches (float [B, 3, H, W] tensors, 0..1)
and writes a QDQ ONNX that yoloq's evaluator and `benchmark_onnx` run as they are.
Each can keep the detection head's convolutions float, as yoloq does by default: the
ONNX tools by node name (`head_convs`), Model Optimizer by module name (`head_module`);
`check_head` then reads the written ONNX to confirm that the tool did as it was told.
The peers are optional: a missing package raises ImportError, which the caller reports.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from yoloq.export import export_detector


def decode_nodes(float_onnx: str | Path) -> list[str]:
    """The detector's box decode: every node of the layer that writes the output, but its
    convolutions. No tool should quantize it (pixel coordinates and 0..1 scores share one
    tensor there), so each peer is told to leave it float, as its documentation advises
    for post-processing."""
    return [node.name for node in _detect_layer(float_onnx) if node.op_type != "Conv"]


def head_convs(float_onnx: str | Path) -> list[str]:
    """The detection head's convolutions (one per output level), which yoloq keeps float."""
    return [node.name for node in _detect_layer(float_onnx) if node.op_type == "Conv"]


def head_module(model: nn.Module) -> str:
    """The torch name of the detection head (the last layer: `model.77` on the demo model)."""
    head = model.model[-1]
    return next(name for name, module in model.named_modules() if module is head)


def check_head(onnx_path: str | Path, convs: list[str], quantized: bool) -> None:
    """Raise unless every named head convolution has its weight quantized (read through
    a DequantizeLinear) or none has, as asked: a tool that ignored what it was told would
    make the row unlike. (A float convolution may still read a dequantized input.)"""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear"
                   for out in node.output}
    weights = {node.name: node.input[1] in dequantized for node in graph.node
               if node.op_type == "Conv"}
    missing = [name for name in convs if name not in weights]
    if missing:
        raise RuntimeError(f"{Path(onnx_path).name} has no head convolutions {missing}")
    wrong = [name for name in convs if weights[name] != quantized]
    if wrong:
        state = "float" if quantized else "quantized"
        raise RuntimeError(f"{Path(onnx_path).name}: head convolutions {wrong} are {state}")


def _detect_layer(float_onnx: str | Path) -> list:
    """The nodes of the layer that writes the first output (`/model/model.77/...`)."""
    graph = onnx.load(str(float_onnx), load_external_data=False).graph
    last = next(node for node in graph.node if graph.output[0].name in node.output)
    prefix = last.name.rpartition("/")[0] + "/"
    return [node for node in graph.node if node.name.startswith(prefix)]


def ort_quantize_static(
    float_onnx: Path,
    out: Path,
    batches: Iterable[torch.Tensor],
    method: str = "MinMax",
    exclude: list[str] | None = None,
) -> Path:
    """ONNX Runtime's `quantize_static`: QDQ, per-channel int8 weights, uint8 activations,
    reduce_range (7-bit weights), the given calibration method.

    Every calibrator holds the activations of all batches in memory: give it few.
    (`CalibMaxIntermediateOutputs` would bound that, but ONNX Runtime 1.31 drops each
    full chunk without computing its ranges.)"""
    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = ({"images": _numpy(x)} for x in batches)

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(
        str(float_onnx),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=exclude or [],
        calibrate_method=getattr(CalibrationMethod, method),
    )
    return out


def modelopt_export(
    model: nn.Module,
    out: Path,
    batches: list[torch.Tensor],
    img_size: int,
    float_modules: list[str] | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """NVIDIA Model Optimizer: `mtq.quantize(model, INT8_DEFAULT_CFG, forward_loop)` on a
    copy of the (fused) float model, exported with the legacy TorchScript exporter.
    `float_modules` (module names) keep their quantizers disabled, through the config."""
    import modelopt.torch.quantization as mtq

    model = copy.deepcopy(model).eval()

    def forward_loop(m: nn.Module) -> None:
        with torch.no_grad():
            for images in batches:
                m(images)

    patterns = [f"{name}.*" for name in float_modules or []]
    mtq.quantize(model, _disabled(mtq.INT8_DEFAULT_CFG, patterns), forward_loop)
    _require_disabled(model, float_modules or [])
    return export_detector(model, out, img_size, metadata=metadata)


def _disabled(config: dict, patterns: list[str]) -> dict:
    """A copy of a Model Optimizer config whose quantizers matching `patterns` are off
    (its `quant_cfg` is a list of entries since 0.4x, a wildcard dict before)."""
    config = copy.deepcopy(config)
    for pattern in patterns:
        if isinstance(config["quant_cfg"], list):  # later entries win
            config["quant_cfg"].append({"quantizer_name": pattern, "enable": False})
        else:
            config["quant_cfg"][pattern] = {"enable": False}
    return config


def _require_disabled(model: nn.Module, float_modules: list[str]) -> None:
    """A wildcard that matched nothing would leave the head quantized without a word."""
    from modelopt.torch.quantization.nn import TensorQuantizer

    for name in float_modules:
        quantizers = {
            path: module.is_enabled
            for path, module in model.named_modules()
            if path.startswith(f"{name}.") and isinstance(module, TensorQuantizer)
        }
        enabled = [path for path, on in quantizers.items() if on]
        if not quantizers or enabled:
            found = enabled or "no quantizers"
            raise RuntimeError(f"Model Optimizer did not disable {name}: {found}")


def nncf_quantize(
    float_onnx: Path,
    out: Path,
    batches: Iterable[torch.Tensor],
    images: int,
    exclude: list[str] | None = None,
) -> Path:
    """Intel NNCF's `nncf.quantize` on the float ONNX with its defaults (performance
    preset: symmetric int8; fast bias correction), one image per calibration item as
    NNCF advises."""
    import nncf

    nncf.set_log_level(logging.WARNING)  # it logs every node it leaves alone

    singles = [_numpy(x[i : i + 1]) for x in batches for i in range(len(x))][:images]
    dataset = nncf.Dataset(singles, lambda array: {"images": array})
    scope = nncf.IgnoredScope(names=exclude or [], validate=False)
    quantized = nncf.quantize(
        onnx.load(str(float_onnx)), dataset, subset_size=len(singles), ignored_scope=scope
    )
    onnx.save(quantized, str(out))
    return out


def _numpy(images: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(images.detach().cpu().numpy().astype(np.float32))
