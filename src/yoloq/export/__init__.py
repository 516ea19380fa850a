"""Export quantized models to ONNX with explicit QuantizeLinear/DequantizeLinear."""

from yoloq.export.detector import (
    detector_metadata,
    export_detector,
    read_metadata,
)
from yoloq.export.onnx import export_onnx

__all__ = ["detector_metadata", "export_detector", "export_onnx",
           "read_metadata"]
