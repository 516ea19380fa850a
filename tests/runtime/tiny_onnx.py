"""Tiny conv nets exported to ONNX for the benchmark tests."""

from __future__ import annotations

import torch
from torch import nn


def conv_net(width: int) -> nn.Module:
    """Two 3x3 convolutions; the second costs width**2 MACs per pixel."""
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(width, width, 3, padding=1), nn.ReLU())  # fmt: skip


def export(model: nn.Module, path, example: torch.Tensor, dynamic_axes: dict):
    torch.onnx.export(model.eval(), (example,), str(path), opset_version=13, dynamo=False,
                      input_names=["images"], output_names=["output"],
                      dynamic_axes=dynamic_axes)  # fmt: skip
    return path
