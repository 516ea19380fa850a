"""Stand-ins for the `tensorrt` module of TensorRT 10 and of TensorRT 11.

TensorRT never runs where yoloq's tests run, so the version-dependent build logic is
tested against these: module-like objects with the classes, enums and methods
yoloq's build uses, as TensorRT's Python API reference documents them. The
difference that matters:
- TensorRT 10 (10.9's bindings): BuilderFlag has FP16, BF16, INT8, FP8, ... and
  NetworkDefinitionCreationFlag has EXPLICIT_BATCH (deprecated) and STRONGLY_TYPED;
- TensorRT 11 (11.1's bindings): the precision flags are gone from BuilderFlag,
  EXPLICIT_BATCH is gone, STRONGLY_TYPED remains (deprecated: always on).
They build nothing: they record what the build asked for and hand back fixed bytes
and a layer JSON in the inspector format of their version.
"""

from __future__ import annotations

import enum
import json
import types

ENGINE_BYTES = b"stand-in serialized engine"

_COMMON_FLAGS = [
    "DEBUG",
    "GPU_FALLBACK",
    "REFIT",
    "DISABLE_TIMING_CACHE",
    "EDITABLE_TIMING_CACHE",
    "TF32",
    "SPARSE_WEIGHTS",
    "SAFETY_SCOPE",
    "DIRECT_IO",
    "VERSION_COMPATIBLE",
    "EXCLUDE_LEAN_RUNTIME",
    "ERROR_ON_TIMING_CACHE_MISS",
    "DISABLE_COMPILATION_CACHE",
    "STRIP_PLAN",
    "REFIT_IDENTICAL",
    "WEIGHT_STREAMING",
    "REFIT_INDIVIDUAL",
    "STRICT_NANS",
    "MONITOR_MEMORY",
]
_PRECISION_FLAGS = [
    "FP16",
    "BF16",
    "INT8",
    "FP8",
    "INT4",
    "FP4",
    "OBEY_PRECISION_CONSTRAINTS",
    "PREFER_PRECISION_CONSTRAINTS",
]


class Record:
    """What one stand-in module was asked to do, across all its objects."""

    def __init__(self):
        self.network_flags = []
        self.builder_flags = []
        self.memory_pools = {}
        self.verbosity = None
        self.profiles = []  # [(input name, min, opt, max)]
        self.timing_cache_in = []  # bytes each create_timing_cache got
        self.parsed = []
        self.builds = 0
        self.inspected_shape = None  # the input shape of the context the inspector read


def _stand_in(
    version: str,
    precision_flags: bool,
    explicit_batch: bool,
    layer_json: dict,
    parse_ok: bool = True,
    build_ok: bool = True,
) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.record = record = Record()
    flags = (_PRECISION_FLAGS if precision_flags else []) + _COMMON_FLAGS
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", flags, start=0)
    network_flags = (["EXPLICIT_BATCH"] if explicit_batch else []) + [
        "STRONGLY_TYPED",
        "PREFER_AOT_PYTHON_PLUGINS",
        "PREFER_JIT_PYTHON_PLUGINS",
    ]
    trt.NetworkDefinitionCreationFlag = enum.IntEnum(
        "NetworkDefinitionCreationFlag", network_flags, start=0 if explicit_batch else 1
    )
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM"], start=0)
    trt.ProfilingVerbosity = enum.IntEnum(
        "ProfilingVerbosity", ["LAYER_NAMES_ONLY", "NONE", "DETAILED"], start=0
    )
    trt.LayerInformationFormat = enum.IntEnum(
        "LayerInformationFormat", ["ONELINE", "JSON"], start=0
    )
    trt.TensorIOMode = enum.IntEnum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"], start=0)
    trt.DataType = enum.IntEnum("DataType", ["FLOAT", "HALF", "INT8", "INT32", "BOOL"], start=0)

    class Logger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self, min_severity=WARNING):
            self.min_severity = min_severity

    class Network:
        def __init__(self, flags):
            self.flags = flags

    class ParserError:
        def __init__(self, text):
            self.text = text

        def desc(self):
            return self.text

        def __str__(self):
            return f"In node 0 (parseGraph): {self.text}"

    class OnnxParser:
        def __init__(self, network, logger):
            self.errors = []

        def parse_from_file(self, path):
            record.parsed.append(str(path))
            if not parse_ok:
                self.errors = [ParserError("INVALID_NODE: unsupported op")]
            return parse_ok

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, index):
            return self.errors[index]

    class TimingCache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return self.data + b"+timings"

    class OptimizationProfile:
        def set_shape(self, name, low, opt, high):
            record.profiles.append((name, tuple(low), tuple(opt), tuple(high)))

    class BuilderConfig:
        def __init__(self):
            self.profiling_verbosity = trt.ProfilingVerbosity.LAYER_NAMES_ONLY

        def set_memory_pool_limit(self, pool, size):
            record.memory_pools[pool] = size

        def set_flag(self, flag):
            record.builder_flags.append(flag)

        def create_timing_cache(self, data):
            record.timing_cache_in.append(bytes(data))
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def add_optimization_profile(self, profile):
            return 0

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags=0):
            record.network_flags.append(flags)
            return Network(flags)

        def create_builder_config(self):
            return BuilderConfig()

        def create_optimization_profile(self):
            return OptimizationProfile()

        def build_serialized_network(self, network, config):
            record.verbosity = config.profiling_verbosity
            record.builds += 1
            return ENGINE_BYTES if build_ok else None

    class EngineInspector:
        execution_context = None

        def get_engine_information(self, fmt):
            assert fmt == trt.LayerInformationFormat.JSON
            context = self.execution_context
            record.inspected_shape = context.shape if context is not None else None
            return json.dumps(layer_json)

    class CudaEngine:
        """One input `images` [batch, 3, H, W] (batch 1..4, sides 32..64), one output
        `output` of the same shape: 2 * images + 1."""

        num_io_tensors = 2

        def create_engine_inspector(self):
            return EngineInspector()

        def get_tensor_name(self, index):
            return ("images", "output")[index]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "images" else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return trt.DataType.FLOAT

        def get_tensor_shape(self, name):
            return (-1, 3, -1, -1)

        def get_tensor_profile_shape(self, name, profile_index):
            return [(1, 3, 32, 32), (2, 3, 64, 64), (4, 3, 64, 64)]

        def create_execution_context(self):
            return ExecutionContext()

    class ExecutionContext:
        """Runs the engine's arithmetic with torch on the raw device addresses it is given,
        on the stream it is given, as TensorRT would (so CUDA graphs capture it)."""

        def __init__(self):
            self.shape, self.addresses, self.views, self.profiler = None, {}, {}, None

        def set_input_shape(self, name, shape):
            self.shape = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            return self.shape

        def set_tensor_address(self, name, address):
            self.addresses[name] = address
            return True

        def execute_async_v3(self, stream_handle):
            import torch

            images, output = self._view("images"), self._view("output")
            with torch.cuda.stream(torch.cuda.ExternalStream(stream_handle)):
                output.copy_(images * 2 + 1)
            if self.profiler is not None:
                self.profiler.report_layer_time("images * 2 + 1", 0.01)
            return True

        def _view(self, name):
            """A tensor over the address set for `name`, made once (never during capture)."""
            key = (self.addresses[name], self.shape)
            if self.views.get(name, (None,))[0] != key:
                self.views[name] = (key, _device_tensor(*key))
            return self.views[name][1]

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, data):
            return CudaEngine() if bytes(data) == ENGINE_BYTES else None

    class IProfiler:
        def report_layer_time(self, layer_name, ms):
            raise NotImplementedError

    for cls in (Logger, OnnxParser, Builder, Runtime, IProfiler):
        setattr(trt, cls.__name__, cls)
    return trt


def _device_tensor(address: int, shape: tuple[int, ...]):
    """A float32 CUDA tensor over memory given by address (the CUDA array interface)."""
    import torch

    class Memory:
        __cuda_array_interface__ = {
            "shape": shape,
            "typestr": "<f4",
            "data": (address, False),
            "version": 2,
        }

    return torch.as_tensor(Memory(), device="cuda")


# Layer information as each version's inspector writes it (detailed verbosity).
LAYERS_10 = {
    "Layers": [
        {
            "Name": "images_QuantizeLinear",
            "LayerType": "Reformat",
            "Origin": "QDQ",
            "Inputs": [
                {
                    "Name": "images",
                    "Dimensions": [1, 3, 64, 64],
                    "Format/Datatype": "Row major linear FP32",
                }
            ],
            "Outputs": [
                {
                    "Name": "q",
                    "Dimensions": [1, 3, 64, 64],
                    "Format/Datatype": "Channel major INT8 format where channel % 4 == 0",
                }
            ],
            "TacticValue": "0x0",
        },
        {
            "Name": "conv.weight + /conv/Conv",
            "LayerType": "CaskConvolution",
            "Inputs": [
                {
                    "Name": "q",
                    "Dimensions": [1, 3, 64, 64],
                    "Format/Datatype": "Channel major INT8 format where channel % 4 == 0",
                }
            ],
            "Outputs": [
                {
                    "Name": "output",
                    "Dimensions": [1, 8, 64, 64],
                    "Format/Datatype": "Row major linear FP32",
                }
            ],
            "Metadata": "[ONNX Layer: /conv/Conv]\x1e[ONNX Layer: /conv/QuantizeLinear]",
            "TacticName": "sm80_xmma_fprop_implicit_gemm_interleaved_i8i8",
            "StreamId": 0,
        },
    ],
    "Bindings": ["images", "output"],
}
LAYERS_11 = {
    "Layers": [
        {
            "Name": "__myl_ConvAct",
            "LayerType": "kgen",
            "Inputs": [
                {
                    "Name": "images",
                    "Dimensions": [1, 3, 64, 64],
                    "Format": "kLINEAR",
                    "DataType": "Half",
                }
            ],
            "Outputs": [
                {
                    "Name": "output",
                    "Dimensions": [1, 8, 64, 64],
                    "Format": "kLINEAR",
                    "DataType": "Half",
                }
            ],
            "Metadata": "[ONNX Layer: /conv/Conv]\x1f[ONNX Layer: /act/LeakyRelu]",
            "TacticName": "sm90_conv_fp16",
            "StreamId": 0,
        },
    ],
    "I/O Tensors": [
        {
            "Name": "images",
            "IOMode": "Input",
            "DataType": "Half",
            "Dimensions": [-1, 3, 64, 64],
            "Location": "Device",
            "IsShapeInferenceIO": False,
        },
        {
            "Name": "output",
            "IOMode": "Output",
            "DataType": "Half",
            "Dimensions": [-1, 8, 64, 64],
            "Location": "Device",
            "IsShapeInferenceIO": False,
        },
    ],
}


def StandInTensorRT10(**options) -> types.ModuleType:
    """A stand-in of TensorRT 10.9: precision builder flags present, weak typing by default."""
    return _stand_in("10.9.0.34", True, True, LAYERS_10, **options)


def StandInTensorRT11(**options) -> types.ModuleType:
    """A stand-in of TensorRT 11.1: no FP16/INT8 builder flags; every network strongly typed."""
    return _stand_in("11.1.0.6", False, False, LAYERS_11, **options)
