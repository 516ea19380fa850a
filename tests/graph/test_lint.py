"""`lint_onnx` on small hand-built Q/DQ graphs, one per kind of problem, and on yoloq's own
trt exports with and without the placement rules."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from yoloq.cli import main
from yoloq.graph.lint import KINDS, lint_onnx


class Builder:
    """A tiny graph writer: 8-channel feature maps, Q/DQ with given scales."""

    def __init__(self):
        self.nodes, self.inits, self.count = [], [], 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, value) -> str:
        name = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out + "_node", **attrs))
        return out

    def qdq(self, x: str, scale: float) -> str:
        s, zp = self.const(np.float32(scale)), self.const(np.int8(0))
        return self.node("DequantizeLinear", [self.node("QuantizeLinear", [x, s, zp]), s, zp])

    def weight(self, per_channel: bool = True, quantized: bool = True) -> str:
        w = self.const(
            np.random.default_rng(self.count).normal(size=(8, 8, 1, 1)).astype(np.float32)
        )
        if not quantized:
            return w
        scale = np.full(8, 0.01, np.float32) if per_channel else np.float32(0.01)
        s = self.const(scale)
        zp = self.const(np.zeros(8, np.int8) if per_channel else np.int8(0))
        q = self.node("QuantizeLinear", [w, s, zp], axis=0)
        return self.node("DequantizeLinear", [q, s, zp], axis=0)

    def conv(self, x: str, scale: float | None = 0.1, act: bool = True, **weight) -> str:
        """(Q/DQ) -> Conv -> LeakyRelu, as the trt profile exports a quantized layer."""
        x = self.qdq(x, scale) if scale is not None else x
        y = self.node("Conv", [x, self.weight(**weight)])
        return self.node("LeakyRelu", [y], alpha=0.1) if act else y

    def model(self, output: str) -> onnx.ModelProto:
        info = [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 8, 8, 8]) for n in ("x", output)
        ]
        graph = helper.make_graph(self.nodes, "g", [info[0]], [info[1]], self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def found(model: onnx.ModelProto) -> dict[str, int]:
    onnx.checker.check_model(model)
    return {kind: n for kind, n in lint_onnx(model).counts().items() if n}


def clean_graph(b: Builder) -> str:
    """conv -> (conv, maxpool) -> concat -> conv, every scale around them equal."""
    a = b.conv("x", 0.05)
    branch = b.conv(a, 0.1)
    pooled = b.node(
        "MaxPool", [b.qdq(a, 0.1)], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]
    )
    up = b.node(
        "Resize",
        [
            b.node("Concat", [branch, pooled], axis=1),
            "",
            b.const(np.array([1, 1, 2, 2], np.float32)),
        ],
        mode="nearest",
    )
    return b.conv(up, 0.1)


def test_a_clean_graph_has_no_findings():
    b = Builder()
    assert found(b.model(clean_graph(b))) == {}


def test_concat_with_different_scales():
    b = Builder()
    a, c = b.conv("x", 0.05), b.conv("x", 0.05)
    b.conv(a, 0.3)  # another reader of a concat input, at its own scale
    assert found(b.model(b.conv(b.node("Concat", [a, c], axis=1), 0.1))) == {"concat": 1}


def test_maxpool_with_different_scales_in_and_out():
    b = Builder()
    pooled = b.node("MaxPool", [b.qdq(b.conv("x", 0.05), 0.1)], kernel_shape=[2, 2], strides=[2, 2])
    assert found(b.model(b.conv(pooled, 0.2))) == {"maxpool": 1}


def test_one_tensor_quantized_with_two_scales():
    b = Builder()
    a = b.conv("x", 0.05)
    out = b.node("Concat", [b.conv(a, 0.1), b.conv(a, 0.2)], axis=1)  # float concat, no Q
    assert found(b.model(out)) == {"shared-tensor": 1}


def test_qdq_between_a_conv_and_its_activation():
    b = Builder()
    y = b.conv("x", 0.05, act=False)
    out = b.node("LeakyRelu", [b.qdq(y, 0.1)], alpha=0.1)
    assert found(b.model(b.conv(out, 0.1))) == {"conv-output-qdq": 1}


def test_qdq_on_both_inputs_of_a_residual_add():
    b = Builder()
    a = b.conv("x", 0.05)
    added = b.node("Add", [b.qdq(a, 0.1), b.qdq(b.conv(a, 0.1), 0.2)])
    assert found(b.model(b.conv(added, 0.3))) == {"conv-output-qdq": 1}


def test_residual_add_without_qdq_is_a_float_op_and_with_identity_qdq_fuses():
    b = Builder()
    a = b.conv("x", 0.05)
    added = b.node("Add", [a, b.conv(a, 0.1)])
    assert found(b.model(b.conv(added, 0.3))) == {"float-op": 1}
    b = Builder()
    a = b.conv("x", 0.05)
    added = b.node("Add", [b.qdq(a, 0.1), b.conv(a, 0.1)])
    assert found(b.model(b.conv(added, 0.3))) == {}


@pytest.mark.parametrize("weight", [{"per_channel": False}, {"quantized": False}])
def test_weights_without_per_channel_qdq(weight):
    b = Builder()
    assert found(b.model(b.conv(b.conv("x", 0.05), 0.1, **weight))) == {"weight-per-tensor": 1}


def test_float_layers_raise_nothing():
    """A float head and decode after int8 layers, and a float network input."""
    b = Builder()
    head = b.conv(b.conv("x", 0.05), None, act=False, quantized=False)
    assert found(b.model(b.node("Sigmoid", [head]))) == {}


def test_counts_list_every_kind():
    assert list(lint_onnx(Builder().model("x")).counts()) == list(KINDS)


@pytest.mark.parametrize("arch", ["yolov7-tiny", "yolov5s", "yolov7"])
def test_trt_export_passes_strict_lint_only_with_rules(quantized, arch, capsys):
    _, _, with_rules = quantized(arch)
    _, _, without = quantized(arch, rules=False)
    assert main(["lint", str(with_rules), "--strict"]) == 0
    assert main(["lint", str(without), "--strict"]) == 1
    assert "concat" in capsys.readouterr().out


def pad_between_equal_scales(mode: str, value: float | None) -> dict[str, int]:
    """conv -> Q/DQ -> Pad -> Q/DQ (the same scale) -> conv."""
    b = Builder()
    inputs = [b.qdq(b.conv("x", 0.05), 0.1), b.const(np.array([0, 0, 1, 1, 0, 0, 1, 1]))]
    if value is not None:
        inputs.append(b.const(np.float32(value)))
    return found(b.model(b.conv(b.node("Pad", inputs, mode=mode), 0.1)))


@pytest.mark.parametrize(
    "mode, value, transparent",
    [("constant", None, True), ("constant", 0.0, True), ("constant", 0.5, False),
     ("reflect", None, True), ("edge", None, True)],
)
def test_pad_keeps_the_scale_when_it_pads_zeros_or_copies(mode, value, transparent):
    """A zero (on every grid) or a copied value keeps the scale domain: nothing to report.
    Any other fill is a new value: the Pad runs in float between int8 ops."""
    assert pad_between_equal_scales(mode, value) == ({} if transparent else {"float-op": 1})


def per_tensor_layer(op: str, shape: tuple[int, ...], **attrs) -> dict[str, int]:
    """An int8 `op` whose constant weight of `shape` has one per-tensor Q/DQ."""
    b = Builder()
    x = b.conv("x", 0.05)
    if op in ("MatMul", "Gemm"):  # 2-D data [rows, K]; K from the weight's layout
        k = shape[1] if attrs.get("transB") else shape[0]
        x = b.node("Reshape", [x, b.const(np.array([-1, k]))])
    w = b.const(np.random.default_rng(0).normal(size=shape).astype(np.float32))
    s, zp = b.const(np.float32(0.01)), b.const(np.int8(0))
    weight = b.node("DequantizeLinear", [b.node("QuantizeLinear", [w, s, zp]), s, zp])
    return found(b.model(b.node(op, [b.qdq(x, 0.1), weight], **attrs)))


@pytest.mark.parametrize(
    "op, shape, attrs, channels",
    [("MatMul", (8, 1), {}, 1), ("MatMul", (1, 4), {}, 4), ("Gemm", (8, 1), {}, 1),
     ("Gemm", (1, 4), {"transB": 0}, 4), ("Gemm", (1, 8), {"transB": 1}, 1),
     ("ConvTranspose", (8, 1, 2, 2), {}, 1), ("ConvTranspose", (8, 1, 2, 2), {"group": 2}, 2)],
)
def test_per_tensor_weights_are_reported_by_each_ops_output_channels(op, shape, attrs, channels):
    """MatMul weights are [K, N], Gemm's [K, N] unless transB, ConvTranspose's [C_in,
    C_out / group, ...]: per-tensor weights are fine only with one output channel."""
    expected = {"weight-per-tensor": 1} if channels > 1 else {}
    assert per_tensor_layer(op, shape, **attrs) == expected


def test_linear_on_3d_input_reads_its_weight_through_a_transpose(tmp_path):
    """torch exports nn.Linear on [B, T, C] as DQ(weight) -> Transpose -> MatMul."""
    import torch
    import torch.nn as nn

    from yoloq.export import export_onnx
    from yoloq.quant import calibrate, quantize

    model, _ = quantize(nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 1)).eval())
    x = torch.rand(2, 5, 8)
    calibrate(model, [x], method="max", show_progress=False)
    proto = onnx.load(str(export_onnx(model, tmp_path / "linear.onnx", x)))
    transposed = [n for n in proto.graph.node if n.op_type == "Transpose"]
    assert len(transposed) == 2 and sum(n.op_type == "MatMul" for n in proto.graph.node) == 2
    assert lint_onnx(proto).clean
