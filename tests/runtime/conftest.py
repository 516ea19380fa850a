"""Tiny ONNX models for the benchmark tests, exported once per session."""

from __future__ import annotations

import pytest
import torch
from tiny_onnx import conv_net, export


@pytest.fixture(scope="session")
def onnx_pair(tmp_path_factory):
    """(light, heavy): the same net at width 16 and 32, ~4x the MACs, dynamic batch."""
    folder = tmp_path_factory.mktemp("bench")
    example = torch.zeros(1, 3, 64, 64)
    axes = {"images": {0: "batch"}, "output": {0: "batch"}}
    light = export(conv_net(16), folder / "light.onnx", example, axes)
    heavy = export(conv_net(32), folder / "heavy.onnx", example, axes)
    return light, heavy
