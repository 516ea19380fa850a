"""Test gating: `slow` tests run with --runslow; `gpu` and `tensorrt` tests skip
where no CUDA device (or no TensorRT) is present."""

from __future__ import annotations

import importlib.util

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def _has_tensorrt() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("tensorrt") is not None


def pytest_collection_modifyitems(config, items):
    skips = {
        "slow": None if config.getoption("--runslow") else "slow: run with --runslow",
        "gpu": None if torch.cuda.is_available() else "gpu: no CUDA device",
        "tensorrt": None if _has_tensorrt() else "tensorrt: TensorRT or a GPU is missing",
    }
    for item in items:
        for marker, reason in skips.items():
            if reason and marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
