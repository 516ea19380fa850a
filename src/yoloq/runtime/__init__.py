"""Backends that run exported models: ONNX Runtime (CPU/CUDA)."""

from yoloq.runtime.ort import OrtModel

__all__ = ["OrtModel"]
