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


def cpu_flags() -> list[str]:
    """The CPU features that decide int8 speed (AVX-512, VNNI), from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    return sorted(f for f in flags if f in {"avx2", "avx512f", "avx512_vnni", "avx_vnni",
                                            "amx_int8"})


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
