"""Backends that run exported models, one face for all (`predictor.Backend`): ONNX
Runtime on the CPU (`ort`), TensorRT on NVIDIA GPUs (`tensorrt/`), registered by name
in `backends`; interleaved CPU timing in `bench`."""

from yoloq.runtime.backends import (
    BACKENDS,
    backend_for,
    get_backend,
    load_predictor,
    register_backend,
    torch_predictor,
)
from yoloq.runtime.ort import OrtModel
from yoloq.runtime.predictor import Backend, DeployJob, DeployTarget, Predictor

__all__ = [
    "BACKENDS",
    "Backend",
    "DeployJob",
    "DeployTarget",
    "OrtModel",
    "Predictor",
    "backend_for",
    "get_backend",
    "load_predictor",
    "register_backend",
    "torch_predictor",
]
