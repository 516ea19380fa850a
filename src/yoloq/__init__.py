"""yoloq: INT8 quantization of YOLO detectors with explicit Q/DQ nodes."""

__version__ = "0.1.0"
