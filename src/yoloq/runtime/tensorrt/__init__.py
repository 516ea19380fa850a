"""TensorRT: build engines from yoloq's ONNX, run and time them, read and draw their layers.

TensorRT itself is optional (`pip install yoloq[tensorrt]`) and imported only when
an engine is built or run (`api.load_tensorrt`); reading and drawing an engine's
layer JSON needs neither TensorRT nor a GPU.
"""

from yoloq.runtime.tensorrt.api import TensorRT, TensorRTUnavailable, load_tensorrt, tensorrt_status
from yoloq.runtime.tensorrt.bench import EngineBench, benchmark_engine
from yoloq.runtime.tensorrt.build import BuildResult, BuildSettings, build_engine
from yoloq.runtime.tensorrt.draw import draw_engine
from yoloq.runtime.tensorrt.inspector import load_engine_graph
from yoloq.runtime.tensorrt.layers import EngineGraph, EngineLayer, summarize

__all__ = [
    "BuildResult",
    "BuildSettings",
    "EngineBench",
    "EngineGraph",
    "EngineLayer",
    "TensorRT",
    "TensorRTUnavailable",
    "benchmark_engine",
    "build_engine",
    "draw_engine",
    "load_engine_graph",
    "load_tensorrt",
    "summarize",
    "tensorrt_status",
]
