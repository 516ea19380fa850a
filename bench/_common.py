"""Helpers shared by the benchmark scripts: model lookup, machine description, JSON output."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def load_benchmark_model(name: str) -> torch.nn.Module:
    """A torchvision classifier by name (random weights), else a yoloq model name or path."""
    import torchvision

    if hasattr(torchvision.models, name):
        return getattr(torchvision.models, name)().eval()
    from yoloq.models import load_model

    return load_model(name).fuse().eval()


def machine() -> dict:
    return {
        "processor": platform.processor() or platform.machine(),
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
