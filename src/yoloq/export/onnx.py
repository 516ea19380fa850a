"""ONNX export of a (fake-)quantized torch model.

Quantizers in quantizing mode export as QuantizeLinear/DequantizeLinear pairs
(per-channel ones with their `axis`); disabled quantizers export as nothing.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch
import torch.nn as nn

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
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {name: {0: "batch"} for name in (*input_names, *output_names)}
    if dynamic_axes is not None:
        axes, dynamic_batch = dynamic_axes, True
    was_training = model.training
    model.eval()
    handle, temporary = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(handle)
    try:
        with torch.no_grad():
            torch.onnx.export(
                model, (example,), temporary, opset_version=opset, dynamo=False,
                input_names=list(input_names), output_names=list(output_names),
                dynamic_axes=axes if dynamic_batch else None, do_constant_folding=True,
            )
        onnx.checker.check_model(temporary)
        os.replace(temporary, path)
    finally:
        model.train(was_training)
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def _check_calibrated(model: nn.Module) -> None:
    for path, quantizer in iter_quantizers(model):
        if quantizer.mode == QuantMode.CALIBRATING:
            raise ValueError(f"quantizer {path} is still calibrating; finish calibration first")
        if quantizer.mode == QuantMode.QUANTIZING and quantizer.amax is None:
            raise ValueError(f"quantizer {path} has no amax; calibrate the model before export")
