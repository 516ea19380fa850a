"""FP16 ONNX: the float parts of a model in half precision, for TensorRT's strongly typed builds.

TensorRT 11 takes each layer's precision from the types in the network: an FP16
engine needs an ONNX whose float tensors are FP16. `convert_to_fp16` rewrites a
float (or Q/DQ) model so:

- every node that ONNX defines for float16 computes in float16 (its float
  initializers and constants converted, `Cast(to=float)` turned into float16);
- nodes that ONNX does not define for float16 (Range, for instance) stay FP32,
  and so do inputs that ONNX types as float only (Resize's `scales`), with Casts
  where the two meet;
- the graph's inputs and outputs stay FP32 unless asked (`keep_io_types=False`);
- Q/DQ nodes compute in float16 when the opset allows it (19 and newer), with
  FP16 scales, else they stay FP32 behind Casts.

Why FP16 scales on FP16 tensors: TensorRT requires an FP16 scale to match the
type of the tensor it quantizes (IQuantizeLayer), and ONNX, before opset 23,
requires QuantizeLinear's scale to have the input's type and gives
DequantizeLinear's output the scale's type. FP32 scales around FP16 tensors would
need Casts between every Q/DQ pair and its layer, which TensorRT's Q/DQ fusions do
not expect. So Q/DQ models are exported at opset 19 or newer (as NVIDIA's Model
Optimizer does) and their scales rounded to FP16, a relative change of at most
2**-11; scales below FP16's range are raised to its smallest positive value,
since a zero scale is invalid (such channels hold weights of about 1e-6).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from yoloq.graph.ops import QDQ_OPS

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
FP16_MAX = float(np.finfo(np.float16).max)
FP16_TINY = float(np.float16(2.0**-24))  # the smallest positive float16 (subnormal)
FP16_QDQ_OPSET = 19  # QuantizeLinear/DequantizeLinear take float16 from opset 19


@dataclass
class Fp16Report:
    """What the conversion did, to print and to check."""

    fp16_nodes: int = 0
    fp32_nodes: list[str] = field(default_factory=list)  # float nodes kept FP32
    casts_added: int = 0
    clipped_values: int = 0  # float constants beyond FP16's range, clipped to it
    max_scale_change: float = 0.0  # relative change of Q/DQ scales rounded to FP16


@dataclass
class _Plan:
    """Per node whether it computes in FP16, per tensor the type it is stored in."""

    types: dict[str, int]
    fp16_nodes: set[int]
    wants: dict[tuple[int, int], int]  # (node index, input index) -> FLOAT or HALF


def convert_to_fp16(
    model: onnx.ModelProto, keep_io_types: bool = True, keep_fp32_ops: tuple[str, ...] = ()
) -> tuple[onnx.ModelProto, Fp16Report]:
    """A copy of `model` with its float parts in FP16; see the module docstring.

    `keep_fp32_ops`: op types to leave in FP32 (e.g. ("Resize",)).

    Example:
        fp16, report = convert_to_fp16(onnx.load("ptq_trt.onnx"))
        onnx.save(fp16, "ptq_trt_fp16.onnx")
    """
    model = _with_types(model)
    plan = _plan(model, keep_fp32_ops)
    report = Fp16Report(fp16_nodes=len(plan.fp16_nodes))
    graph = model.graph
    report.fp32_nodes = [
        node.name or node.op_type
        for i, node in enumerate(graph.node)
        if i not in plan.fp16_nodes
        and node.op_type != "Constant"
        and _touches_float(node, plan.types)
    ]
    constants = _convert_constants(graph, plan, report)
    new_nodes = _rewire(graph, plan, constants, keep_io_types, report)
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]  # stale types; shape inference below writes them again
    if not keep_io_types:
        _declare_fp16_io(graph, plan)
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model, full_check=True)  # every node's types must agree
    return model, report


def _declare_fp16_io(graph, plan: _Plan) -> None:
    """Without keep_io_types: float inputs are FP16, and so are outputs of FP16 nodes."""
    fp16_outputs = {out for i in plan.fp16_nodes for out in graph.node[i].output}
    for value in graph.input:
        if value.type.tensor_type.elem_type == FLOAT:
            value.type.tensor_type.elem_type = HALF
    for value in graph.output:
        if value.type.tensor_type.elem_type == FLOAT and value.name in fp16_outputs:
            value.type.tensor_type.elem_type = HALF


def opset_of(model: onnx.ModelProto) -> int:
    """The model's default-domain opset."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _with_types(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy (shape inference returns one) with value_info for every tensor it can type."""
    return onnx.shape_inference.infer_shapes(model)


def _tensor_types(graph: onnx.GraphProto) -> dict[str, int]:
    types = {}
    for value in (*graph.input, *graph.output, *graph.value_info):
        types[value.name] = value.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    types[node.output[0]] = attribute.t.data_type
    return types


def _touches_float(node, types: dict[str, int]) -> bool:
    return any(types.get(name) == FLOAT for name in (*node.input, *node.output) if name)


# --- which nodes compute in FP16 ---------------------------------------------------------


def _plan(model: onnx.ModelProto, keep_fp32_ops: tuple[str, ...]) -> _Plan:
    graph, opset = model.graph, opset_of(model)
    types = _tensor_types(graph)
    fp16_nodes, pinned = set(), {}
    for index, node in enumerate(graph.node):
        capable, pinned[index] = _fp16_capability(node, types, opset, keep_fp32_ops)
        if capable:
            fp16_nodes.add(index)
    wants = _input_wants(graph, types, fp16_nodes, pinned)
    # A Cast to float whose result only FP32 nodes read (a dimension turned into a
    # Range bound, say) stays FP32: FP16 holds integers exactly only up to 2048.
    for index, node in enumerate(graph.node):
        if (
            node.op_type == "Cast"
            and index in fp16_nodes
            and not _read_as_fp16(node.output[0], wants, graph)
        ):
            fp16_nodes.discard(index)
    return _Plan(types, fp16_nodes, _input_wants(graph, types, fp16_nodes, pinned))


def _fp16_capability(
    node, types: dict[str, int], opset: int, keep_fp32_ops: tuple[str, ...]
) -> tuple[bool, set[int]]:
    """(whether the node can compute in FP16, its inputs that ONNX types as float only)."""
    if node.op_type == "Constant" or not _touches_float(node, types):
        return False, set()
    schema = _schema(node, opset)
    graph_attributes = any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute
    )
    dtype_attribute = any(a.name == "dtype" for a in node.attribute)  # e.g. RandomNormal
    if schema is None or node.op_type in keep_fp32_ops or graph_attributes or dtype_attribute:
        return False, set()
    constraints = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    pinned, flexible = set(), False
    slots = [(True, i, name) for i, name in enumerate(node.input)] + [
        (False, i, name) for i, name in enumerate(node.output)
    ]
    for is_input, position, name in slots:
        if not name or types.get(name) != FLOAT:
            continue
        formal = _formal(schema.inputs if is_input else schema.outputs, position)
        if formal is None:
            return False, set()
        if formal.type_str == "tensor(float)":  # float only, whatever the others are
            if not is_input:
                return False, set()
            pinned.add(position)
        elif "tensor(float16)" in constraints.get(formal.type_str, ()):
            flexible = True
        else:
            return False, set()
    return flexible, pinned


def _schema(node, opset: int):
    try:
        return onnx.defs.get_schema(node.op_type, opset, node.domain or "")
    except onnx.defs.SchemaError:
        return None  # a custom op: left as it is


def _formal(params, position: int):
    """The formal parameter behind actual input/output `position` (the last may repeat)."""
    if position < len(params):
        return params[position]
    variadic = onnx.defs.OpSchema.FormalParameterOption.Variadic
    return params[-1] if params and params[-1].option == variadic else None


def _input_wants(graph, types, fp16_nodes: set[int], pinned: dict[int, set[int]]):
    wants = {}
    for index, node in enumerate(graph.node):
        for position, name in enumerate(node.input):
            if name and types.get(name) == FLOAT:
                fp16 = index in fp16_nodes and position not in pinned[index]
                wants[(index, position)] = HALF if fp16 else FLOAT
    return wants


def _read_as_fp16(tensor: str, wants, graph) -> bool:
    return any(
        graph.node[index].input[position] == tensor and want == HALF
        for (index, position), want in wants.items()
    )


# --- rewriting the graph -----------------------------------------------------------------


def _convert_constants(graph, plan: _Plan, report: Fp16Report) -> dict[str, str]:
    """Store in FP16 every float initializer or Constant that some FP16 node reads.

    Returns {name: name of an FP32 copy} for those that FP32 inputs read too.
    """
    readers = defaultdict(set)
    for (index, position), want in plan.wants.items():
        readers[graph.node[index].input[position]].add(want)
    scales = {node.input[1] for node in graph.node if node.op_type in QDQ_OPS}
    fp32_copies = {}
    for init in graph.initializer:
        if init.data_type == FLOAT and HALF in readers[init.name]:
            if FLOAT in readers[init.name]:
                fp32_copies[init.name] = _add_fp32_copy(graph, init)
            init.CopyFrom(_to_fp16(init, init.name in scales, report))
    for node in graph.node:
        value = next((a for a in node.attribute if a.name == "value"), None)
        if (
            node.op_type == "Constant"
            and value is not None
            and value.t.data_type == FLOAT
            and HALF in readers[node.output[0]]
        ):
            if FLOAT in readers[node.output[0]]:
                fp32_copies[node.output[0]] = _add_fp32_copy(graph, value.t, node.output[0])
            value.t.CopyFrom(_to_fp16(value.t, node.output[0] in scales, report))
    return fp32_copies


def _add_fp32_copy(graph, tensor, name: str | None = None) -> str:
    copy = numpy_helper.from_array(numpy_helper.to_array(tensor), f"{name or tensor.name}__fp32")
    graph.initializer.append(copy)
    return copy.name


def _to_fp16(tensor, is_scale: bool, report: Fp16Report):
    values = numpy_helper.to_array(tensor).astype(np.float32)
    if is_scale:
        half = np.clip(values, FP16_TINY, FP16_MAX).astype(np.float16)
        change = np.abs(half.astype(np.float32) / values - 1) if values.size else np.zeros(1)
        report.max_scale_change = max(report.max_scale_change, float(change.max()))
    else:
        report.clipped_values += int((np.abs(values) > FP16_MAX).sum())
        half = np.clip(values, -FP16_MAX, FP16_MAX).astype(np.float16)
    return numpy_helper.from_array(half, tensor.name)


def _stored_type(
    name: str, graph, plan: _Plan, producers: dict[str, int], keep_io_types: bool
) -> int:
    """FLOAT or HALF: the type `name` has after the rewrite (before output Casts)."""
    if name in producers:
        node = graph.node[producers[name]]
        if node.op_type == "Constant":
            value = next((a for a in node.attribute if a.name == "value"), None)
            return value.t.data_type if value is not None else FLOAT
        return HALF if producers[name] in plan.fp16_nodes else FLOAT
    initializer = next((i for i in graph.initializer if i.name == name), None)
    if initializer is not None:
        return initializer.data_type
    return FLOAT if keep_io_types else HALF  # a graph input


def _rewire(
    graph, plan: _Plan, fp32_copies: dict[str, str], keep_io_types: bool, report: Fp16Report
) -> list:
    """The new node list: FP16 Casts, and Casts wherever a tensor's stored type differs
    from the type its reader wants."""
    producers = {out: i for i, node in enumerate(graph.node) for out in node.output}
    outputs = {value.name for value in graph.output}
    stored = {}  # float tensor -> its type after the rewrite
    casts = {}  # (tensor, type) -> name of the Cast output
    renamed = {}  # graph output -> the FP16 tensor its producer now writes
    nodes = []
    for index, node in enumerate(graph.node):
        for position, name in enumerate(node.input):
            want = plan.wants.get((index, position))
            if want is None:
                continue
            name = renamed.get(name, name) if want == HALF else name
            if name not in stored:
                stored[name] = _stored_type(name, graph, plan, producers, keep_io_types)
            if stored[name] != want:
                name = (
                    fp32_copies.get(name)
                    if want == FLOAT and name in fp32_copies
                    else _cast(name, want, casts, nodes, report)
                )
            node.input[position] = name
        if node.op_type == "Cast" and index in plan.fp16_nodes:
            _set_attribute(node, "to", HALF)
        nodes.append(node)
        if index in plan.fp16_nodes and keep_io_types:
            for position, name in enumerate(node.output):
                if name in outputs and plan.types.get(name) == FLOAT:
                    renamed[name] = node.output[position] = f"{name}__fp16"
                    stored[renamed[name]], stored[name] = HALF, FLOAT
                    nodes.append(
                        helper.make_node(
                            "Cast", [renamed[name]], [name], to=FLOAT, name=f"{name}__to_fp32"
                        )
                    )
                    report.casts_added += 1
    return nodes


def _cast(name: str, to: int, casts: dict, nodes: list, report: Fp16Report) -> str:
    if (name, to) not in casts:
        suffix = "fp16" if to == HALF else "fp32"
        casts[(name, to)] = f"{name}__to_{suffix}"
        nodes.append(
            helper.make_node(
                "Cast", [name], [casts[(name, to)]], to=to, name=f"{name}__cast_{suffix}"
            )
        )
        report.casts_added += 1
    return casts[(name, to)]


def _set_attribute(node, name: str, value) -> None:
    for attribute in node.attribute:
        if attribute.name == name:
            attribute.i = value
            return
    node.attribute.append(helper.make_attribute(name, value))
