"""Helpers shared by the benchmark scripts: model lookup, machine description, JSON output."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch
import torch.nn as nn
import torchvision

from yoloq.models import load_model

RESULTS = Path(__file__).parent / "results"


def load_benchmark_model(name: str) -> torch.nn.Module:
    """A torchvision classifier by name (random weights), else a yoloq model name or path."""
    if hasattr(torchvision.models, name):
        return getattr(torchvision.models, name)().eval()

    return load_model(name).fuse().eval()


def random_detector(name: str, seed: int = 0) -> torch.nn.Module:
    """A shipped YOLO architecture with random weights and random BatchNorm statistics,
    fused. Untouched BatchNorms fold into identical zero biases, which the ONNX exporter
    merges into one shared tensor; ONNX Runtime's quantizer then cannot quantize those
    biases and leaves the convolutions unfused, an artefact that no trained model has."""
    model = load_model(name)
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.weight.data = torch.rand(n, generator=generator) + 0.5
            module.bias.data = torch.randn(n, generator=generator) * 0.1
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
    return model.fuse().eval()


def calibration_images(count: int, size: int, seed: int = 0, batch: int = 2) -> list[torch.Tensor]:
    """Smooth random images in batches, for speed-only runs (random weights, no dataset)."""
    generator = torch.Generator().manual_seed(seed)
    low = torch.rand(count, 3, size // 16, size // 16, generator=generator)
    return list(nn.functional.interpolate(low, size=(size, size), mode="bilinear").split(batch))


def cpu_flags() -> list[str]:
    """The CPU features that decide int8 and bf16 speed (AVX-512, VNNI, BF16, AMX), from
    /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
        [],
    )
    return sorted(
        f for f in flags if f in {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
                                  "amx_tile", "amx_int8", "amx_bf16"}
    )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    return {
        "processor": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def write_json(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
