"""An engine's layers as yoloq sees them: type, precision, fusion, reformat, time.

`yoloq.runtime.tensorrt.inspector` fills these from TensorRT's JSON (any version from
8.6 to 11); the drawing and the summary read only these.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

# Substrings of TensorRT's type names, most specific first ("UInt8" before "Int8",
# "BFloat16" before "Float16", "Float16" and "Half" before "Float").
_DTYPES = (
    (("bfloat16", "bf16"), "bf16"),
    (("fp16", "half", "float16"), "fp16"),
    (("fp8", "e4m3"), "fp8"),
    (("fp4", "e2m1"), "fp4"),
    (("uint8",), "uint8"),
    (("int8",), "int8"),
    (("int4",), "int4"),
    (("int32",), "int32"),
    (("int64",), "int64"),
    (("bool",), "bool"),
    (("fp32", "float"), "fp32"),
)
FUSION_SEPARATOR = " + "


def dtype_of(text: str | None) -> str:
    """'Thirty-two wide channel vectorized row major Int8 format' -> 'int8',
    'Half' -> 'fp16', 'Row major linear FP32' -> 'fp32'; '?' when unknown."""
    lowered = (text or "").lower()
    for keys, name in _DTYPES:
        if any(key in lowered for key in keys):
            return name
    return "?"


_VECTOR_WIDTHS = {"two": 2, "four": 4, "sixteen": 16, "thirty-two": 32}


def short_format(text: str | None) -> str:
    """A compact memory layout: 'NCHW', 'NHWC8', 'NC/32HW32', or '' when not said."""
    lowered = (text or "").lower()
    wide = re.search(r"(two|four|sixteen|thirty-two) wide channel vectorized", lowered)
    if wide:
        width = _VECTOR_WIDTHS[wide.group(1)]
        return f"NC/{width}HW{width}"
    if "channel major" in lowered:
        modulo = re.search(r"channel % (\d+) == 0", lowered)
        return f"NHWC{modulo.group(1)}" if modulo else "NHWC"
    if "row major" in lowered or "klinear" in lowered:
        return "NCHW"
    return ""


@dataclass(frozen=True)
class Tensor:
    """A layer's input or output: name, shape, element type, memory layout."""

    name: str
    shape: tuple[int, ...] = ()
    dtype: str = "?"
    layout: str = ""


@dataclass(frozen=True)
class EngineLayer:
    """One engine layer (a fused layer is one layer whose name joins its parts by ' + ')."""

    name: str
    kind: str  # TensorRT's LayerType: CaskConvolution, Reformat, kgen, ...
    inputs: tuple[Tensor, ...] = ()
    outputs: tuple[Tensor, ...] = ()
    origin: str = ""  # Reformat layers: "QDQ" (a standalone Q/DQ) or "REFORMAT"
    onnx_nodes: tuple[str, ...] = ()  # from TensorRT 10's Metadata field, where given
    tactic: str = ""
    time_ms: float | None = None  # average per inference, from a profile

    @property
    def precision(self) -> str:
        """The element type the layer writes (its first output's), e.g. 'int8'."""
        known = [t.dtype for t in self.outputs if t.dtype != "?"]
        return known[0] if known else "?"

    @property
    def parts(self) -> tuple[str, ...]:
        """The network layers fused into this one (just the name when not fused)."""
        return tuple(self.name.split(FUSION_SEPARATOR))

    @property
    def fused(self) -> bool:
        return len(self.parts) > 1 or len(self.onnx_nodes) > 1

    @property
    def is_reformat(self) -> bool:
        """A layer that only converts layout or type (TensorRT's Reformat, including
        a standalone Q/DQ it could not fuse into a neighbour)."""
        lowered = self.name.lower()
        return (
            self.kind.lower() == "reformat"
            or "reformatter" in lowered
            or ("reformatting copynode" in lowered)
        )


@dataclass
class EngineGraph:
    """The layers in execution order and the engine's input/output tensor names."""

    layers: list[EngineLayer]
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    format: str = ""  # which TensorRT JSON it came from, in words
    profile_runs: int | None = None  # runs the timings average over
    unmatched_profile: list[str] = field(default_factory=list)  # timed names not in layers

    @property
    def timed(self) -> bool:
        return any(layer.time_ms is not None for layer in self.layers)

    def edges(self) -> list[tuple[int, int, Tensor]]:
        """(producer index, consumer index, tensor) for every tensor passed between
        layers; producer -1 is an engine input."""
        producers = {}
        for index, layer in enumerate(self.layers):
            for tensor in layer.outputs:
                producers[tensor.name] = index
        edges = []
        for index, layer in enumerate(self.layers):
            for tensor in layer.inputs:
                edges.append((producers.get(tensor.name, -1), index, tensor))
        return edges


@dataclass(frozen=True)
class EngineSummary:
    layers: int
    by_precision: dict[str, int]
    fused: int
    reformats: int
    reformats_from_qdq: int  # standalone Q/DQ layers (Origin QDQ)
    total_ms: float | None
    reformat_ms: float | None
    ms_by_precision: dict[str, float]
    slowest: list[tuple[str, float]]

    def lines(self) -> list[str]:
        """The summary as short lines of text."""
        precisions = ", ".join(f"{name} {count}" for name, count in self.by_precision.items())
        lines = [
            f"{_count(self.layers, 'layer')} ({self.fused} fused): {precisions}",
            f"{_count(self.reformats, 'reformat layer')} ({self.reformats_from_qdq} "
            "standalone Q/DQ)",
        ]
        if self.total_ms is not None:
            share = 100 * (self.reformat_ms or 0) / self.total_ms if self.total_ms else 0.0
            lines.append(
                f"{self.total_ms:.3f} ms per inference, {self.reformat_ms:.3f} ms "
                f"({share:.1f}%) in reformats"
            )
        return lines


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def summarize(graph: EngineGraph, slowest: int = 10) -> EngineSummary:
    """Layers by precision, fusions, reformat count and the time spent in reformats."""
    counts = Counter(layer.precision for layer in graph.layers)
    reformats = [layer for layer in graph.layers if layer.is_reformat]
    times = [layer for layer in graph.layers if layer.time_ms is not None]
    ms_by_precision: Counter[str] = Counter()
    for layer in times:
        ms_by_precision[layer.precision] += layer.time_ms
    ranked = sorted(times, key=lambda layer: layer.time_ms, reverse=True)[:slowest]
    return EngineSummary(
        layers=len(graph.layers),
        by_precision=dict(counts.most_common()),
        fused=sum(layer.fused for layer in graph.layers),
        reformats=len(reformats),
        reformats_from_qdq=sum(layer.origin.upper() == "QDQ" for layer in reformats),
        total_ms=sum(layer.time_ms for layer in times) if times else None,
        reformat_ms=sum(layer.time_ms or 0.0 for layer in reformats) if times else None,
        ms_by_precision=dict(ms_by_precision.most_common()),
        slowest=[(layer.name, layer.time_ms) for layer in ranked],
    )
