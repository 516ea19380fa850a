"""Which TensorRT is installed, and what its version asks of a build.

TensorRT is an optional extra (`pip install yoloq[tensorrt]`): its wheels are large
and only useful next to an NVIDIA GPU. Everything here imports it lazily, through
`load_tensorrt()`, which tests replace with stand-ins of TensorRT 10 and 11.

The versions differ where yoloq builds engines:
- TensorRT 10 builds weakly typed networks by default: the builder picks FP16 kernels
  when `BuilderFlag.FP16` is set, and Q/DQ layers need `BuilderFlag.INT8`.
- TensorRT 11 removed those flags (and the INT8 calibrators): every network is
  strongly typed, each layer runs in the type the ONNX gives it, so the float parts
  must already be FP16 in the ONNX (`yoloq export --fp16`).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any

import torch

from yoloq.errors import YoloqError

MIN_VERSION = (10, 0)
STRONGLY_TYPED_FROM = (11, 0)  # the first version without BuilderFlag.FP16 / INT8
INSTALL_HINT = "pip install 'yoloq[tensorrt]'"


class TensorRTUnavailable(YoloqError):
    """TensorRT or an NVIDIA GPU is missing here."""


@dataclass(frozen=True)
class TensorRT:
    """The tensorrt module and how to build with it."""

    module: Any
    version: tuple[int, ...]

    @property
    def strongly_typed(self) -> bool:
        """True where every network is strongly typed (TensorRT 11 and newer)."""
        return self.version[:2] >= STRONGLY_TYPED_FROM

    @property
    def float_type(self) -> str:
        """The ONNX float type engines are built from: FP16 where the network's types decide
        the precision, FP32 where `BuilderFlag.FP16` lets TensorRT choose."""
        return "fp16" if self.strongly_typed else "fp32"

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))


def parse_version(text: str) -> tuple[int, ...]:
    """'10.9.0.34' -> (10, 9, 0, 34); a non-numeric tail ('11.0.0rc1') ends it."""
    parts = []
    for part in str(text).split("."):
        match = re.match(r"\d+", part)
        if match is None:
            break
        parts.append(int(match.group()))
        if match.end() < len(part):
            break
    return tuple(parts)


def import_tensorrt():
    """The tensorrt module; raises TensorRTUnavailable with the install hint."""
    try:
        return importlib.import_module("tensorrt")
    except ImportError as error:
        raise TensorRTUnavailable(
            f"TensorRT is not installed ({error}). yoloq's TensorRT commands need the "
            f"`tensorrt` extra ({INSTALL_HINT}) and an NVIDIA GPU with CUDA."
        ) from None


def require_gpu() -> None:
    """Raise TensorRTUnavailable unless torch sees a CUDA device (engines run on it)."""
    if not torch.cuda.is_available():
        raise TensorRTUnavailable(
            "no NVIDIA GPU with CUDA is visible (torch.cuda.is_available() is False): "
            "TensorRT builds and runs engines on the GPU. yoloq's TensorRT commands need "
            f"the `tensorrt` extra ({INSTALL_HINT}) and an NVIDIA GPU."
        )


def load_tensorrt() -> TensorRT:
    """The installed TensorRT, checked: version 10 or newer and a GPU to run on."""
    module = import_tensorrt()
    require_gpu()
    return describe(module)


def describe(module) -> TensorRT:
    """A TensorRT for `module` (the real one or a stand-in); checks the version."""
    version = parse_version(getattr(module, "__version__", "0"))
    if version[:2] < MIN_VERSION:
        raise TensorRTUnavailable(
            f"TensorRT {'.'.join(map(str, version)) or '?'} is too old: yoloq needs "
            f"TensorRT 10 or newer ({INSTALL_HINT})"
        )
    return TensorRT(module, version)


def tensorrt_status() -> str | None:
    """Why TensorRT cannot run here, in one line, or None when it can."""
    try:
        load_tensorrt()
    except TensorRTUnavailable as error:
        return str(error)
    return None
