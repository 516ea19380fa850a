"""FP16 ONNX for TensorRT's strongly typed builds: float parts FP16, I/O FP32, Q/DQ in the
FP16 graph at opset 19 (FP16 scales) or behind Casts before it; ONNX Runtime agrees
with the FP32 model."""

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper

from models_tiny import smooth_images
from yoloq.cli import main
from yoloq.export import export_onnx
from yoloq.export.fp16 import FP16_TINY, convert_to_fp16
from yoloq.quant import calibrate, quantize
from yoloq.runtime import OrtModel

HALF, FLOAT = TensorProto.FLOAT16, TensorProto.FLOAT


class UpsampleNet(nn.Module):
    """Conv, LeakyReLU, nearest upsampling (Resize with float-only scales), Sigmoid."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 2, 1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = nn.functional.leaky_relu(self.conv(x), 0.1)
        return torch.sigmoid(self.head(nn.functional.interpolate(x, scale_factor=2.0)))


def exported(tmp_path, opset=13, quantized=False):
    torch.manual_seed(0)
    model = UpsampleNet().eval()
    if quantized:
        quantize(model)
        calibrate(model, smooth_images(16).split(8), method="max", show_progress=False)
    path = export_onnx(model, tmp_path / f"m{opset}.onnx", smooth_images(1), opset)
    return model, onnx.load(str(path))


def ort_output(proto, tmp_path, images, name="x.onnx"):
    onnx.save(proto, str(tmp_path / name))
    return OrtModel(tmp_path / name, providers=["CPUExecutionProvider"])(images)


def elem_type(values, name):
    return next(v.type.tensor_type.elem_type for v in values if v.name == name)


def test_float_model_converts_with_fp32_io_and_matches(tmp_path):
    model, proto = exported(tmp_path)
    half, report = convert_to_fp16(proto)
    graph = half.graph
    assert {init.data_type for init in graph.initializer} == {HALF}
    assert elem_type(graph.input, "images") == FLOAT and elem_type(graph.output, "output") == FLOAT
    resize = next(n for n in graph.node if n.op_type == "Resize")
    scales = {init.name: init for init in graph.initializer}.get(resize.input[2])
    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}
    scale_type = (
        scales.data_type
        if scales is not None
        else constants[resize.input[2]].attribute[0].t.data_type
    )
    assert scale_type == FLOAT  # ONNX types Resize's scales float only
    assert report.casts_added == 2 and report.clipped_values == 0  # the input and output
    images = smooth_images(2, seed=4)
    with torch.no_grad():
        expected = model(images)
    actual = ort_output(half, tmp_path, images)
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual, expected, atol=2e-3, rtol=0)


def test_qdq_at_opset_19_runs_in_fp16_with_fp16_scales(tmp_path):
    model, proto = exported(tmp_path, opset=19, quantized=True)
    half, report = convert_to_fp16(proto)
    qdq = [n for n in half.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    typed = onnx.shape_inference.infer_shapes(half).graph
    types = {v.name: v.type.tensor_type.elem_type for v in typed.value_info}
    types.update({i.name: i.data_type for i in typed.initializer})
    for node in half.graph.node:
        if node.op_type == "Constant":
            types[node.output[0]] = node.attribute[0].t.data_type
    assert qdq and all(types[node.input[1]] == HALF for node in qdq)  # the scales
    assert all(types[n.output[0]] == HALF for n in qdq if n.op_type == "DequantizeLinear")
    assert not report.fp32_nodes and report.max_scale_change < 2**-10
    images = smooth_images(2, seed=5)
    fp32 = ort_output(proto, tmp_path, images, "fp32.onnx")
    fp16 = ort_output(half, tmp_path, images, "fp16.onnx")
    step = model.head.input_quantizer._scale.item()
    assert (fp16 - fp32).abs().mean().item() < step  # rounding flips are rare and small


def test_qdq_before_opset_19_stays_fp32_behind_casts(tmp_path):
    _, proto = exported(tmp_path, opset=13, quantized=True)
    half, report = convert_to_fp16(proto)
    qdq = {n.name for n in half.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    assert qdq <= set(report.fp32_nodes)
    assert report.casts_added > 2
    images = smooth_images(1, seed=6)
    torch.testing.assert_close(
        ort_output(half, tmp_path, images),
        ort_output(proto, tmp_path, images, "fp32.onnx"),
        atol=0.02,
        rtol=0,
    )


def test_fp16_io_and_tiny_scales(tmp_path):
    _, proto = exported(tmp_path, opset=19, quantized=True)
    q = next(n for n in proto.graph.node if n.op_type == "QuantizeLinear")
    tiny = numpy_helper.from_array(np.array(1e-9, np.float32), "tiny_scale")
    proto.graph.initializer.append(tiny)
    q.input[1] = "tiny_scale"
    half, report = convert_to_fp16(proto, keep_io_types=False)
    assert elem_type(half.graph.input, "images") == HALF
    assert elem_type(half.graph.output, "output") == HALF
    value = numpy_helper.to_array(next(i for i in half.graph.initializer if i.name == "tiny_scale"))
    assert value.dtype == np.float16 and float(value) == pytest.approx(FP16_TINY)
    assert report.max_scale_change > 1  # said, not hidden
    out = ort_output(half, tmp_path, smooth_images(1))  # OrtModel feeds FP16 input
    assert out.dtype == torch.float32


def test_ops_without_fp16_stay_fp32():
    """Range has no float16 in ONNX: it and the Cast feeding it stay FP32."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "axis"], ["n"], axis=0),
        helper.make_node("Cast", ["n"], ["n_float"], to=FLOAT),
        helper.make_node("Range", ["zero", "n_float", "one"], ["grid"]),
        helper.make_node("Mul", ["x", "grid"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(3, np.int64), "axis"),
        numpy_helper.from_array(np.array(0, np.float32), "zero"),
        numpy_helper.from_array(np.array(1, np.float32), "one"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", FLOAT, [1, 1, 1, 5])],
        [helper.make_tensor_value_info("y", FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    half, report = convert_to_fp16(model)
    assert sorted(report.fp32_nodes) == ["Cast", "Range"]
    cast = next(n for n in half.graph.node if n.output == ["n_float"])
    assert helper.get_attribute_value(cast.attribute[0]) == FLOAT
    mul = next(n for n in half.graph.node if n.op_type == "Mul")
    assert all(name.endswith("__to_fp16") for name in mul.input)


def test_cli_exports_fp16_detectors(tmp_path, capsys):
    out = tmp_path / "demo_fp16.onnx"
    assert (
        main(["export", "--weights", "demo", "--float", "--fp16", "--img", "64", "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "FP16 ONNX Runtime vs FP32 torch" in printed
    proto = onnx.load(str(out))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["float_type"] == "fp16" and meta["precision"] == "fp16"
    assert elem_type(proto.graph.input, "images") == FLOAT
    assert (
        main(
            [
                "export",
                "--weights",
                "demo",
                "--float",
                "--fp16-io",
                "--out",
                str(tmp_path / "x.onnx"),
            ]
        )
        == 2
    )
    assert "--fp16-io needs --fp16" in capsys.readouterr().err
