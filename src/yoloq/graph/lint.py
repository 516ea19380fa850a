"""`lint_onnx`: the places in any Q/DQ ONNX where TensorRT would insert a reformat layer
or fail to fuse. Pure ONNX graph analysis (no torch), so it reads anyone's models.

Scale domains: TensorRT moves Q/DQ through ops that keep values as they are
(Concat, MaxPool, nearest Resize, zero padding, reshapes, slices) and treats a Q/DQ
pair as one int8 tensor, so the tensors connected that way must agree on one scale.
The checks, by kind:

- concat: a Concat whose inputs and output carry different scales;
- maxpool: a MaxPool with different scales in and out;
- shared-tensor: one tensor quantized with different scales by different readers;
- conv-output-qdq: Q/DQ on a Conv's output in front of its activation, or on both
  inputs of a residual Add (blocks Conv+activation and Conv+Add fusion);
- float-op: an op that TensorRT cannot fuse into a Conv, reading int8 data and
  feeding a Q (it runs in float between two int8 ops);
- weight-per-tensor: an int8 Conv / Gemm whose weights have no per-channel Q/DQ.

Float layers that are float on purpose (a float head, the box decode after it, the
network input) read no DQ and feed no Q, so they raise nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from yoloq.graph.ops import DEQUANTIZE, QDQ_OPS, QUANTIZE, TRANSPARENT, TRANSPARENT_ONNX
from yoloq.graph.unionfind import UnionFind

# fmt: off
KINDS = ("concat", "maxpool", "shared-tensor", "conv-output-qdq", "float-op",
         "weight-per-tensor")
CONV_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
# Pointwise ops TensorRT fuses into the Conv that produces their input.
ACTIVATIONS = frozenset({"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "HardSigmoid",
                         "HardSwish", "Elu", "Selu", "Softplus", "PRelu", "Mul", "Mish"})
# fmt: on
# Relative difference below which two scales count as equal (float32 rounding).
SCALE_RTOL = 1e-6


@dataclass(frozen=True)
class Finding:
    kind: str
    node: str
    message: str


@dataclass(frozen=True)
class LintReport:
    findings: tuple[Finding, ...]

    @property
    def clean(self) -> bool:
        return not self.findings

    def counts(self) -> dict[str, int]:
        """Findings per kind, every kind listed (zeros too)."""
        found = Counter(finding.kind for finding in self.findings)
        return {kind: found.get(kind, 0) for kind in KINDS}

    def to_dict(self) -> dict:
        return {"counts": self.counts(), "findings": [vars(finding) for finding in self.findings]}


def lint_onnx(model: onnx.ModelProto | str | Path) -> LintReport:
    """Check a Q/DQ ONNX model against TensorRT's fusion rules (see the module docstring).

    Example::

        report = lint_onnx("ptq_trt.onnx")
        print(report.counts())
    """
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    graph = QdqGraph(model.graph)
    findings = [*_scale_findings(graph), *_conv_output_findings(graph)]
    covered = {finding.node for finding in findings}
    findings += _float_op_findings(graph, covered)
    findings += _weight_findings(graph)
    return LintReport(tuple(findings))


class QdqGraph:
    """An ONNX graph indexed for Q/DQ analysis: producers, readers, constant values and
    scale domains (tensors joined through transparent ops and Q->DQ pairs)."""

    def __init__(self, graph: onnx.GraphProto):
        self.nodes = list(graph.node)
        self.producer = {out: node for node in self.nodes for out in node.output if out}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)
        self.constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        for node in self.nodes:
            if node.op_type == "Constant" and node.attribute:
                self.constants[node.output[0]] = _constant_value(node)
        self.domain = _scale_domains(self)

    def constant(self, name: str) -> np.ndarray | None:
        """The value of a tensor that is an initializer or a Constant (through Identity)."""
        while name not in self.constants and self.op(name) == "Identity":
            name = self.producer[name].input[0]
        return self.constants.get(name)

    def op(self, tensor: str) -> str | None:
        node = self.producer.get(tensor)
        return node.op_type if node is not None else None

    def is_activation_q(self, node: onnx.NodeProto) -> bool:
        """A Q (or DQ) of activations: its data is computed, not a stored weight."""
        if node.op_type == DEQUANTIZE and self.op(node.input[0]) == QUANTIZE:
            return self.is_activation_q(self.producer[node.input[0]])
        return node.op_type in QDQ_OPS and self.constant(node.input[0]) is None

    def domain_of(self, tensor: str) -> str:
        """The root tensor of the scale domain `tensor` belongs to."""
        return self.domain.get(tensor, tensor)

    def scale(self, node: onnx.NodeProto) -> np.ndarray:
        """A Q/DQ node's scale (NaN where it is computed, not stored)."""
        value = self.constant(node.input[1])
        return np.atleast_1d(np.nan if value is None else value).astype(np.float64)

    def readers_of(self, tensor: str, op_types: Iterable[str]) -> list[onnx.NodeProto]:
        return [node for node in self.readers.get(tensor, []) if node.op_type in op_types]


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    attribute = node.attribute[0]
    if attribute.name == "value":
        return numpy_helper.to_array(attribute.t)
    if attribute.name in ("value_float", "value_int"):
        return np.array(onnx.helper.get_attribute_value(attribute))
    return None


def _data_inputs(node: onnx.NodeProto) -> list[str]:
    index = TRANSPARENT_ONNX.get(node.op_type, 0)
    inputs = list(node.input) if index is None else list(node.input[index : index + 1])
    return [name for name in inputs if name]


def _attribute(node: onnx.NodeProto, name: str, default=None):
    found = [a for a in node.attribute if a.name == name]
    return onnx.helper.get_attribute_value(found[0]) if found else default


def _is_transparent(graph: QdqGraph, node: onnx.NodeProto) -> bool:
    """An op of the table that copies values with these attributes (see `TransparentOp`)."""
    op = TRANSPARENT.get(node.op_type)
    if op is None:
        return False
    if op.nearest_only:
        return _attribute(node, "mode", b"nearest") == b"nearest"
    if op.zero_fill_only:
        return _attribute(node, "mode", b"constant") != b"constant" or _pad_value(graph, node) == 0
    return True


def _pad_value(graph: QdqGraph, node: onnx.NodeProto) -> float | None:
    """A constant Pad's value: input 2 from opset 11 (absent: 0), the `value` attribute
    before; None where it is computed."""
    if len(node.input) > 2 and node.input[2]:
        value = graph.constant(node.input[2])
        return float(value.ravel()[0]) if value is not None and value.size == 1 else None
    return float(_attribute(node, "value", 0.0))


def _scale_domains(graph: QdqGraph) -> dict[str, str]:
    """{tensor: root tensor of its domain}, joined through transparent ops and Q->DQ pairs."""
    sets = UnionFind()
    for node in graph.nodes:
        if _is_transparent(graph, node):
            data = _data_inputs(node)
            outputs = node.output[:1] if node.op_type in ("MaxPool", "Dropout") else node.output
            for name in [*data[1:], *outputs]:
                if data and name:
                    sets.union(name, data[0])
        elif node.op_type == DEQUANTIZE and graph.op(node.input[0]) == QUANTIZE:
            sets.union(node.output[0], graph.producer[node.input[0]].input[0])
    return sets.roots()


def _scale_findings(graph: QdqGraph) -> list[Finding]:
    """Domains whose Q/DQ nodes disagree: a finding per Concat and MaxPool in the domain,
    or one shared-tensor finding where the domain has neither."""
    scales: dict[str, list[np.ndarray]] = {}
    for node in graph.nodes:
        if node.op_type in QDQ_OPS and graph.is_activation_q(node):
            tensor = node.input[0] if node.op_type == QUANTIZE else node.output[0]
            scales.setdefault(graph.domain_of(tensor), []).append(graph.scale(node))
    mixed = {root: values for root, values in scales.items() if _distinct(values) > 1}
    findings, reported = [], set()
    for node in graph.nodes:
        root = graph.domain_of(node.output[0]) if node.output else None
        if node.op_type in ("Concat", "MaxPool") and root in mixed:
            kind = node.op_type.lower()
            findings.append(
                Finding(
                    kind,
                    _name(node),
                    f"{node.op_type} {_name(node)}: inputs "
                    f"and output carry {_describe(mixed[root])}",
                )
            )
            reported.add(root)
    for root, values in mixed.items():
        if root not in reported:
            findings.append(
                Finding(
                    "shared-tensor",
                    root,
                    f"tensor {root} is quantized with {_describe(values)} by different readers",
                )
            )
    return findings


def _distinct(values: list[np.ndarray]) -> int:
    unique: list[np.ndarray] = []
    for value in values:
        if not any(
            u.shape == value.shape
            and np.allclose(u, value, rtol=SCALE_RTOL, atol=0, equal_nan=True)
            for u in unique
        ):
            unique.append(value)
    return len(unique)


def _describe(values: list[np.ndarray]) -> str:
    shown = sorted({float(v.ravel()[0]) for v in values})
    text = ", ".join(f"{v:.6g}" for v in shown[:4]) + (", ..." if len(shown) > 4 else "")
    return f"{_distinct(values)} different scales ({text})"


def _name(node: onnx.NodeProto) -> str:
    return node.name or node.output[0]


def _conv_source(graph: QdqGraph, tensor: str, depth: int = 4) -> onnx.NodeProto | None:
    """The Conv whose output `tensor` is, directly or through fusable activations."""
    node = graph.producer.get(tensor)
    if node is None or depth == 0:
        return None
    if node.op_type in CONV_OPS:
        return node
    if node.op_type in ACTIVATIONS:
        sources = {
            id(s): s
            for s in (_conv_source(graph, name, depth - 1) for name in node.input if name)
            if s is not None
        }
        return next(iter(sources.values())) if len(sources) == 1 else None
    return None


def _dequantized(graph: QdqGraph, tensor: str) -> onnx.NodeProto | None:
    """The activation Q whose DQ produces `tensor`, if any."""
    node = graph.producer.get(tensor)
    if node is None or node.op_type != DEQUANTIZE or not graph.is_activation_q(node):
        return None
    return graph.producer.get(node.input[0])


def _conv_output_findings(graph: QdqGraph) -> list[Finding]:
    findings = []
    for node in graph.nodes:
        if node.op_type == QUANTIZE and graph.op(node.input[0]) in CONV_OPS:
            dqs = graph.readers_of(node.output[0], [DEQUANTIZE])
            after = [r for dq in dqs for r in graph.readers.get(dq.output[0], [])]
            after += graph.readers.get(node.input[0], [])
            if any(r.op_type in ACTIVATIONS for r in after):
                conv = graph.producer[node.input[0]]
                findings.append(
                    Finding(
                        "conv-output-qdq",
                        _name(node),
                        f"Q/DQ {_name(node)} sits between {_name(conv)} and its activation",
                    )
                )
        elif node.op_type == "Add" and len(node.input) == 2:
            quantized = [_dequantized(graph, name) for name in node.input]
            if all(quantized) and any(_conv_source(graph, q.input[0]) for q in quantized):
                findings.append(
                    Finding(
                        "conv-output-qdq",
                        _name(node),
                        f"Add {_name(node)}: "
                        "Q/DQ on both inputs blocks the Conv+Add fusion; "
                        "quantize the identity branch only",
                    )
                )
    return findings


def _float_op_findings(graph: QdqGraph, covered: set[str]) -> list[Finding]:
    quantized, scaled = set(), set()
    for node in graph.nodes:
        if node.op_type in QDQ_OPS and graph.is_activation_q(node):
            tensor = node.input[0] if node.op_type == QUANTIZE else node.output[0]
            scaled.add(graph.domain_of(tensor))
            if node.op_type == QUANTIZE:
                quantized.add(graph.domain_of(tensor))
    findings = []
    for node in graph.nodes:
        if (
            node.op_type in QDQ_OPS
            or node.op_type in CONV_OPS
            or node.op_type == "Constant"
            or _is_transparent(graph, node)
            or _name(node) in covered
            or not node.output
        ):
            continue
        inputs = [name for name in node.input if name and graph.constant(name) is None]
        reads_int8 = any(graph.domain_of(name) in scaled for name in inputs)
        feeds_q = graph.domain_of(node.output[0]) in quantized
        if reads_int8 and feeds_q and not _fuses_into_conv(graph, node, inputs):
            findings.append(
                Finding(
                    "float-op",
                    _name(node),
                    f"{node.op_type} {_name(node)} runs in float between int8 ops",
                )
            )
    return findings


def _fuses_into_conv(graph: QdqGraph, node: onnx.NodeProto, inputs: list[str]) -> bool:
    """An activation after a Conv, or an Add of a Conv's output and a DQ (Conv+Add); or an
    activation behind a Q/DQ on a Conv output, already reported as conv-output-qdq."""
    quantizers = [_dequantized(graph, name) for name in inputs]
    if any(q is not None and graph.op(q.input[0]) in CONV_OPS for q in quantizers):
        return True
    if node.op_type in ACTIVATIONS:
        return _conv_source(graph, node.output[0]) is not None
    if node.op_type in ("Add", "Sum") and len(inputs) == 2:
        conv = [_conv_source(graph, name) is not None for name in inputs]
        dq = [_dequantized(graph, name) is not None for name in inputs]
        return (conv[0] and dq[1]) or (conv[1] and dq[0])
    return False


def _weight_findings(graph: QdqGraph) -> list[Finding]:
    findings = []
    for node in graph.nodes:
        if node.op_type not in CONV_OPS or len(node.input) < 2:
            continue
        if _dequantized(graph, node.input[0]) is None:
            continue  # a float layer: its weights stay float too
        weight, shape = _weight_dq(graph, node.input[1])
        if weight is None:
            findings.append(
                Finding(
                    "weight-per-tensor",
                    _name(node),
                    f"{node.op_type} {_name(node)} reads int8 data but float weights",
                )
            )
        elif graph.scale(weight).size == 1 and _out_channels(node, shape) != 1:
            findings.append(
                Finding(
                    "weight-per-tensor",
                    _name(node),
                    f"{node.op_type} "
                    f"{_name(node)}: weights quantized per tensor, not per "
                    "output channel",
                )
            )
    return findings


def _weight_dq(graph: QdqGraph, tensor: str) -> tuple[onnx.NodeProto | None, tuple | None]:
    """The DQ a weight input comes from, directly or through one Transpose (torch exports
    nn.Linear on inputs of more than 2 dimensions as DQ -> Transpose -> MatMul), and the
    weight's shape as the op reads it (None where the weight is not a constant)."""
    node = graph.producer.get(tensor)
    perm = None
    if node is not None and node.op_type == "Transpose":
        perm = _attribute(node, "perm")
        node = graph.producer.get(node.input[0])
    if node is None or node.op_type != DEQUANTIZE:
        return None, None
    value = graph.constant(node.input[0])
    if value is None and graph.op(node.input[0]) == QUANTIZE:
        value = graph.constant(graph.producer[node.input[0]].input[0])
    if value is None:
        return node, None
    shape = value.shape
    if graph.op(tensor) == "Transpose":  # no perm: reverse the axes
        shape = tuple(shape[i] for i in perm) if perm else shape[::-1]
    return node, shape


def _out_channels(node: onnx.NodeProto, shape: tuple | None) -> int | None:
    """Output channels of a Conv, ConvTranspose, Gemm or MatMul from the shape of its weight
    (input 1). Each op lays its weight out differently: Conv [C_out, C_in / group, k...],
    ConvTranspose [C_in, C_out / group, k...], MatMul [..., K, N] (1-D [K]: one output),
    Gemm B [K, N], or [N, K] with transB=1."""
    if not shape:
        return None
    if node.op_type == "MatMul":
        return int(shape[-1]) if len(shape) > 1 else 1
    if node.op_type == "Gemm":
        return int(shape[0] if _attribute(node, "transB", 0) else shape[-1])
    if node.op_type == "ConvTranspose":
        return int(shape[1]) * int(_attribute(node, "group", 1)) if len(shape) > 1 else None
    return int(shape[0])
