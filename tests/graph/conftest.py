"""Quantized YOLO models (random weights, built from the shipped configs) and their trt
exports at 64 px, made once per session: building and exporting yolov7 costs seconds."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

IMG = 64


def build_quantized(arch: str, rules: bool = True, profile: str = "trt"):
    """A fused, quantized, calibrated model whose activations stay near 1 in magnitude.

    Default initialisation shrinks activations layer after layer (to ~1e-7 deep in
    yolov5s), where every amax clamps to the same floor and unlike scales look alike;
    He-initialised weights keep them apart. Percentile calibration gives each quantizer
    its own scale, so an untied group really disagrees.
    """
    from yoloq.models import build_model
    from yoloq.models.quantized import quantize_yolo
    from yoloq.quant import calibrate

    torch.manual_seed(0)
    model = build_model(arch, nc=3).fuse().eval()
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.normal_(module.bias, 0.0, 0.1)
    model, _, config = quantize_yolo(model, profile, rules=rules)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.rand(2, 3, IMG, IMG, generator=generator) for _ in range(2)]
    calibrate(model, batches, method="percentile", show_progress=False)
    return model, config


@pytest.fixture(scope="session")
def quantized(tmp_path_factory):
    """quantized(arch, rules) -> (model, config, path of its trt ONNX export), cached."""
    from yoloq.export import export_detector

    folder = tmp_path_factory.mktemp("graph_exports")
    cache = {}

    def make(arch: str, rules: bool = True):
        if (arch, rules) not in cache:
            model, config = build_quantized(arch, rules)
            path = export_detector(model, folder / f"{arch}_{int(rules)}.onnx", IMG)
            cache[arch, rules] = model, config, path
        return cache[arch, rules]

    return make
