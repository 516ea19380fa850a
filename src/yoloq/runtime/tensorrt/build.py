"""Build a TensorRT engine from yoloq's ONNX, with the precision settings of the installed
TensorRT, an optimisation profile, a timing cache and the engine inspector's layer JSON.

The build writes, next to the engine (`model.engine`):
- `model.layers.json`: the engine inspector's layer information (detailed verbosity),
  which `yoloq trt draw` reads;
- `model.engine.json`: what runs the engine needs (class names, input size, precision,
  the shape range), copied from the ONNX's metadata;
- `timing.cache`: kernel timings reused by later builds in the folder.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from yoloq.errors import YoloqError
from yoloq.files import write_bytes_atomic
from yoloq.graph.ops import QDQ_OPS
from yoloq.runtime.tensorrt.api import TensorRT, load_tensorrt

DEFAULT_WORKSPACE_MB = 4096
TIMING_CACHE = "timing.cache"
Shape = tuple[int, ...]


@dataclass(frozen=True)
class BuildSettings:
    """How to build: the batch range, dynamic height/width, workspace and timing cache.

    batch: (min, opt, max), or None for batch 1 (or the ONNX's own fixed batch).
    dynamic: height and width range from `min_side` to the image size (opt: the image
        size), so that evaluation can feed rectangular batches; otherwise both are fixed
        at the image size.
    img_size: None: the `img_size` in the ONNX's metadata.
    """

    batch: tuple[int, int, int] | None = None
    dynamic: bool = False
    img_size: int | None = None
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    timing_cache: str | None = None  # None: timing.cache next to the engine
    min_side: int = 32

    def __post_init__(self):
        if self.batch is not None:
            low, opt, high = self.batch
            if not 1 <= low <= opt <= high:
                raise YoloqError(f"batch range {self.batch} must be 1 <= min <= opt <= max")
        if self.workspace_mb <= 0:
            raise YoloqError(f"workspace {self.workspace_mb} MB must be positive")
        if self.img_size is not None and self.img_size < self.min_side:
            raise YoloqError(f"image size {self.img_size} is below {self.min_side}")


@dataclass(frozen=True)
class OnnxFacts:
    """What the build needs to know of the ONNX before TensorRT parses it."""

    input_name: str
    input_shape: Shape  # -1 where dynamic
    has_qdq: bool
    float_type: str  # "fp32" | "fp16" | "mixed" | "none"
    metadata: dict[str, str]


@dataclass(frozen=True)
class BuildResult:
    engine: Path
    layers: Path
    metadata: Path
    timing_cache: Path
    tensorrt: str
    typing: str  # how precision was chosen, in words
    shapes: dict[str, list[int]] = field(default_factory=dict)  # min / opt / max
    seconds: float = 0.0


def build_engine(
    onnx_path: str | Path,
    out: str | Path | None = None,
    settings: BuildSettings | None = None,
    layers_path: str | Path | None = None,
    tensorrt: TensorRT | None = None,
) -> BuildResult:
    """Build `onnx_path` into an engine at `out` (default: the ONNX path with .engine).

    Example:
        result = build_engine("ptq_trt_fp16.onnx", settings=BuildSettings(batch=(1, 1, 16)))
        result.layers  # ptq_trt_fp16.layers.json
    """
    onnx_path, settings = Path(onnx_path), settings or BuildSettings()
    if not onnx_path.is_file():
        raise YoloqError(f"ONNX model not found: {onnx_path}")
    facts = read_onnx_facts(onnx_path)
    shapes = profile_shapes(facts, settings)  # argument errors before TensorRT loads
    api = tensorrt or load_tensorrt()
    out = Path(out) if out else onnx_path.with_suffix(".engine")
    cache_path = Path(settings.timing_cache) if settings.timing_cache else out.parent / TIMING_CACHE
    start = time.perf_counter()
    trt = api.module
    logger = trt.Logger(trt.Logger.WARNING)
    serialized, cache, typing = _build(api, logger, onnx_path, facts, settings, shapes, cache_path)
    _write_bytes(out, serialized)
    _write_bytes(cache_path, cache.serialize())
    layers_path = Path(layers_path) if layers_path else layers_file(out)
    opt_shape = shapes[1] if shapes else None
    info = engine_information(trt, logger, serialized, facts.input_name, opt_shape)
    _write_text(layers_path, info)
    shape_dict = dict(zip(("min", "opt", "max"), map(list, shapes))) if shapes else {}
    result = BuildResult(
        engine=out,
        layers=layers_path,
        metadata=metadata_file(out),
        timing_cache=cache_path,
        tensorrt=api.version_text,
        typing=typing,
        shapes=shape_dict,
        seconds=time.perf_counter() - start,
    )
    write_engine_metadata(result, onnx_path, facts, api)
    return result


def _build(
    api: TensorRT,
    logger,
    onnx_path: Path,
    facts: OnnxFacts,
    settings: BuildSettings,
    shapes,
    cache_path: Path,
):
    """(serialized engine, timing cache, how precision was chosen)."""
    trt = api.module
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(api))
    parser = parse_onnx(trt, network, logger, onnx_path)  # owns the weights until the build
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer JSON with details
    typing = set_precision(api, config, facts)
    if shapes is not None:
        add_profile(builder, config, facts.input_name, shapes)
    cache = attach_timing_cache(config, cache_path)
    serialized = builder.build_serialized_network(network, config)
    del parser
    if serialized is None:
        raise YoloqError(f"TensorRT could not build {onnx_path} (its log above says why)")
    return serialized, cache, typing


def layers_file(engine: Path) -> Path:
    """model.engine -> model.layers.json"""
    return engine.with_name(f"{engine.stem}.layers.json")


def metadata_file(engine: Path) -> Path:
    """model.engine -> model.engine.json"""
    return engine.with_name(f"{engine.name}.json")


# --- the ONNX, before TensorRT ------------------------------------------------------------


def read_onnx_facts(path: Path) -> OnnxFacts:
    """Input, Q/DQ presence, float type and yoloq metadata of an ONNX file."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # onnx raises several types for a bad file
        raise YoloqError(f"{path}: not a readable ONNX model ({error})") from None
    graph = proto.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    if len(inputs) != 1:
        raise YoloqError(f"{path}: expected one image input, found {len(inputs)}")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
    float_types = {init.data_type for init in graph.initializer} & {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
    }
    float_type = {
        frozenset({onnx.TensorProto.FLOAT}): "fp32",
        frozenset({onnx.TensorProto.FLOAT16}): "fp16",
    }.get(frozenset(float_types), "mixed" if float_types else "none")
    return OnnxFacts(
        inputs[0].name,
        shape,
        any(n.op_type in QDQ_OPS for n in graph.node),
        float_type,
        {p.key: p.value for p in proto.metadata_props},
    )


def profile_shapes(facts: OnnxFacts, settings: BuildSettings) -> tuple[Shape, Shape, Shape] | None:
    """(min, opt, max) input shapes, or None where the ONNX's shape is fixed and no range
    was asked for."""
    shape = facts.input_shape
    if len(shape) != 4:
        raise YoloqError(f"expected an image input [batch, 3, H, W], got {list(shape)}")
    fixed = all(d > 0 for d in shape)
    if fixed and settings.batch is None and not settings.dynamic:
        return None
    if settings.batch and shape[0] > 0:
        raise YoloqError(
            f"the ONNX's batch size is fixed at {shape[0]}: export it with --dynamic to "
            "build a batch range"
        )
    if settings.dynamic and (shape[2] > 0 or shape[3] > 0):
        raise YoloqError(
            f"the ONNX's height and width are fixed ({shape[2]}x{shape[3]}): "
            "export it with --dynamic for --dynamic engines"
        )
    low_b, opt_b, high_b = settings.batch or ((1, 1, 1) if shape[0] < 0 else (shape[0],) * 3)
    size = settings.img_size or int(facts.metadata.get("img_size", 0))
    if shape[2] < 0 and not size:
        raise YoloqError(
            "the ONNX's height and width are dynamic and its metadata has no "
            "img_size: give the image size (--img)"
        )
    channels = shape[1] if shape[1] > 0 else 3

    def side(dim: int, low: bool) -> int:
        if dim > 0:
            return dim
        return settings.min_side if settings.dynamic and low else size

    low = (low_b, channels, side(shape[2], True), side(shape[3], True))
    opt = (opt_b, channels, side(shape[2], False), side(shape[3], False))
    high = (high_b, channels, side(shape[2], False), side(shape[3], False))
    return low, opt, high


# --- the TensorRT build, by version -------------------------------------------------------


def network_flags(api: TensorRT) -> int:
    """TensorRT 11: STRONGLY_TYPED (always on there; set where the flag still exists, to
    say so). TensorRT 10: 0, a weakly typed network whose precision the flags choose."""
    if not api.strongly_typed:
        return 0
    flag = getattr(api.module.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def set_precision(api: TensorRT, config, facts: OnnxFacts) -> str:
    """Set the builder flags TensorRT 10 needs; returns how precision is chosen, in words."""
    if api.strongly_typed:
        if facts.float_type == "fp32":
            warnings.warn(
                f"TensorRT {api.version_text} builds strongly typed networks and this ONNX's "
                "float parts are FP32, so they run in FP32: export with `yoloq export "
                "--fp16` for FP16 layers",
                UserWarning,
                stacklevel=4,
            )
        return "strongly typed: each layer in the ONNX's type"
    names = ("FP16", "INT8") if facts.has_qdq else ("FP16",)
    for name in names:
        flag = getattr(api.module.BuilderFlag, name, None)
        if flag is None:
            raise YoloqError(f"TensorRT {api.version_text} has no BuilderFlag.{name}")
        config.set_flag(flag)
    return f"weakly typed: BuilderFlag {' + '.join(names)}"


def parse_onnx(trt, network, logger, path: Path):
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise YoloqError(f"{path}: TensorRT's ONNX parser failed: " + "; ".join(errors[:5]))
    return parser


def add_profile(builder, config, input_name: str, shapes: tuple[Shape, Shape, Shape]) -> None:
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, *shapes)
    config.add_optimization_profile(profile)


def attach_timing_cache(config, path: Path):
    """The timing cache saved at `path` (an empty one at first), attached to `config`."""
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def engine_information(trt, logger, serialized, input_name: str, shape: Shape | None) -> str:
    """The engine inspector's JSON for all layers (detailed, as the build asked).

    With dynamic shapes the inspector writes dimensions as -1 and leaves formats out
    unless it inspects an execution context whose input shape is set: `shape` (the
    tuned one) is set on one for it.
    """
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    if engine is None:
        raise YoloqError("TensorRT could not load the engine it just built")
    inspector = engine.create_engine_inspector()
    if shape is not None:
        context = engine.create_execution_context()
        context.set_input_shape(input_name, shape)
        inspector.execution_context = context
    return inspector.get_engine_information(trt.LayerInformationFormat.JSON)


def write_engine_metadata(
    result: BuildResult, onnx_path: Path, facts: OnnxFacts, api: TensorRT
) -> None:
    """model.engine.json: what running the engine needs, from the ONNX's metadata."""
    meta = facts.metadata
    precision = meta.get("precision", "int8" if facts.has_qdq else "fp32")
    if precision == "fp32":  # FP16 by the flag (10) or by the ONNX's types (11)
        precision = "fp16" if not api.strongly_typed or facts.float_type == "fp16" else "fp32"
    data = {
        "names": json.loads(meta.get("names", "[]")),
        "img_size": int(meta["img_size"]) if meta.get("img_size") else None,
        "stride": int(meta["stride"]) if meta.get("stride") else None,
        "precision": precision,
        "profile": meta.get("profile") or None,
        "input": facts.input_name,
        "onnx": onnx_path.name,
        "onnx_float_type": facts.float_type,
        "tensorrt": result.tensorrt,
        "typing": result.typing,
        "shapes": result.shapes,
        "layers": result.layers.name,
    }
    _write_text(result.metadata, json.dumps(data, indent=2) + "\n")


def _write_bytes(path: Path, data) -> None:
    """Write through a temporary file, so a failed build never leaves half an engine."""
    write_bytes_atomic(path, data)


def _write_text(path: Path, text: str) -> None:
    _write_bytes(path, text.encode())
