"""The backends by name, and `load_predictor`: one way to run any model yoloq handles.

A new backend is one file with a `Backend` subclass (see `yoloq.runtime.predictor`)
and one line in `_BUILT_IN` below; users register their own with `register_backend`.
Without a backend named, a file goes to the backend whose suffix it has; everything
else (float or quantized torch checkpoints, shipped architectures, the demo model)
runs in torch.
"""

from __future__ import annotations

from pathlib import Path

import torch

from yoloq.errors import YoloqError
from yoloq.models import load_model
from yoloq.models.quantized import is_quantized_checkpoint, load_quantized
from yoloq.report import BACKENDS as REPORT_BACKENDS
from yoloq.runtime.openvino import OpenVinoBackend
from yoloq.runtime.ort import OnnxRuntimeBackend
from yoloq.runtime.predictor import DEFAULT_IMG_SIZE, Backend, Predictor
from yoloq.runtime.tensorrt.backend import TensorRTBackend

_BUILT_IN: tuple[type[Backend], ...] = (OnnxRuntimeBackend, OpenVinoBackend, TensorRTBackend)
BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Make `backend` known by its name (replacing one of the same name)."""
    if not backend.name:
        raise YoloqError(f"{type(backend).__name__} has no name to register it by")
    BACKENDS[backend.name] = backend
    REPORT_BACKENDS.add(backend.name)  # its rows may go into reports
    return backend


for _backend in _BUILT_IN:
    register_backend(_backend())


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise YoloqError(f"unknown backend {name!r}; known: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name]


def backend_for(path: str | Path) -> Backend | None:
    """The backend that runs files with this suffix, or None (a torch model)."""
    suffix = Path(path).suffix
    return next((b for b in BACKENDS.values() if suffix in b.suffixes), None)


def load_predictor(weights: str | Path, device: str = "cpu",
                   backend: str | None = None) -> Predictor:
    """A Predictor for `weights` on the named backend, or on the one its suffix says
    (.onnx: ONNX Runtime; .xml: OpenVINO; .engine / .plan: TensorRT, on the GPU whatever
    `device` says);
    otherwise a yoloq quantized checkpoint (ptq.pt, qat.pt) or anything
    `yoloq.models.load_model` reads (demo, names, YAML, .pt) in torch."""
    chosen = get_backend(backend) if backend else backend_for(weights)
    if chosen is not None:
        return chosen.load(Path(weights), device)
    if Path(weights).suffix in (".pt", ".pth") and is_quantized_checkpoint(weights):
        model = load_quantized(weights)
        precision, profile = "int8", model.profile
    else:
        model = load_model(weights)
        if hasattr(model, "fuse"):  # Conv+BN folded: the same outputs, faster
            model = model.fuse()
        precision, profile = "fp32", None
    return torch_predictor(model, str(weights), device, precision, profile)


def torch_predictor(model: torch.nn.Module, description: str, device: str = "cpu",
                    precision: str = "fp32", profile: str | None = None) -> Predictor:
    model = model.to(device).eval()

    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(images.to(device))[0]

    return Predictor(run, list(model.names), int(getattr(model, "img_size", DEFAULT_IMG_SIZE)),
                     int(torch.as_tensor(model.stride).max()), description, "torch",
                     precision, profile, model)
