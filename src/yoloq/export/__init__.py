"""Export quantized models to ONNX with explicit QuantizeLinear/DequantizeLinear."""

from yoloq.export.onnx import export_onnx

__all__ = ["export_onnx"]
