"""One way to run any model yoloq handles: float or quantized torch checkpoints,
shipped architectures, the demo model, ONNX files in ONNX Runtime, and TensorRT
engines (.engine / .plan, built by `yoloq trt build`).

A Predictor takes a float [B, 3, H, W] batch (RGB, 0..1) and returns raw
predictions [B, anchors, 5 + nc] (xywh in input pixels, sigmoid scores), which is
what evaluation, prediction and benchmarks consume.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from yoloq.errors import YoloqError

DEFAULT_IMG_SIZE = 640
ENGINE_SUFFIXES = (".engine", ".plan")


@dataclass
class Predictor:
    run: Callable[[torch.Tensor], torch.Tensor]
    names: list[str]
    img_size: int
    stride: int
    description: str
    backend: str  # "torch" | "onnxruntime" | "tensorrt"
    precision: str  # "fp32" | "fp16" | "int8"
    profile: str | None = None
    model: torch.nn.Module | None = None  # the torch model, when there is one

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.run(images)


def load_predictor(weights: str | Path, device: str = "cpu") -> Predictor:
    """A Predictor for `weights`: a .onnx file, a TensorRT engine (.engine, .plan; on the
    GPU whatever `device` says), a yoloq quantized checkpoint (ptq.pt, qat.pt), or
    anything `yoloq.models.load_model` reads (demo, names, YAML, .pt)."""
    if str(weights).endswith(".onnx"):
        return _onnx_predictor(Path(weights), device)
    if Path(weights).suffix in ENGINE_SUFFIXES:
        return _engine_predictor(Path(weights), device)
    from yoloq.models import load_model
    from yoloq.models.quantized import is_quantized_checkpoint, load_quantized

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


def _onnx_predictor(path: Path, device: str) -> Predictor:
    from yoloq.export import read_metadata
    from yoloq.runtime.ort import OrtModel, default_providers

    if not path.is_file():
        raise YoloqError(f"ONNX model not found: {path}")
    meta = read_metadata(path)
    if "names" not in meta:
        raise YoloqError(f"{path}: no class names in its metadata; export it with yoloq")
    providers = default_providers() if device.startswith("cuda") else ["CPUExecutionProvider"]
    model = OrtModel(path, providers=providers)
    profile = meta.get("profile") or None
    return Predictor(model, json.loads(meta["names"]), int(meta.get("img_size", 640)),
                     int(meta.get("stride", 32)), str(path), "onnxruntime",
                     meta.get("precision", "int8" if profile else "fp32"), profile)


def _engine_predictor(path: Path, device: str) -> Predictor:
    from yoloq.runtime.tensorrt.engine import EngineRunner, read_engine_metadata, run_in_profile

    if not path.is_file():
        raise YoloqError(f"TensorRT engine not found: {path}")
    meta = read_engine_metadata(path)
    runner = EngineRunner(path, device if device.startswith("cuda") else "cuda")

    def run(images: torch.Tensor) -> torch.Tensor:
        return run_in_profile(runner, images, runner.shapes)

    return Predictor(run, list(meta["names"]), int(meta.get("img_size") or DEFAULT_IMG_SIZE),
                     int(meta.get("stride") or 32), str(path), "tensorrt",
                     meta.get("precision", "fp32"), meta.get("profile"))
