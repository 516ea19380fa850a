"""yoloq: INT8 quantization of YOLO detectors with explicit Q/DQ nodes.

The stages live in subpackages named after them (`yoloq.models`, `yoloq.data`,
`yoloq.quant`, `yoloq.export`, `yoloq.evaluate`, `yoloq.runtime`); the most used
entry points are also reachable from here.
"""
import importlib

__version__ = "0.1.0"

# Imported on first use, so that `import yoloq` (and `yoloq --help`) stays fast.
_LAZY = {
    "load_checkpoint": "yoloq.models",
    "load_model": "yoloq.models",
    "build_model": "yoloq.models",
    "demo_model": "yoloq.models.demo",
    "demo_data": "yoloq.data.demo",
    "quantize": "yoloq.quant",
    "calibrate": "yoloq.quant",
    "QuantConfig": "yoloq.quant",
    "QuantSpec": "yoloq.quant",
}


def __getattr__(name: str):
    if name in _LAZY:

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'yoloq' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])
