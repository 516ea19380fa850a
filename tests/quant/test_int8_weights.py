"""INT8 weights on disk: the same outputs as the float-weight export, bit for bit in ONNX
Runtime, a file about 4x smaller, and ONNX Runtime's int8 kernels still taken."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from models_tiny import smooth_images
from yoloq.export import export_detector
from yoloq.export.weights import quantize_like_onnx, store_int8_weights
from yoloq.models import load_model
from yoloq.models.quantized import quantize_yolo
from yoloq.quant import calibrate

IMG = 128


@pytest.fixture(scope="module", params=[("trt", 8), ("ort", 7)], ids=["trt", "ort7"])
def exports(request, tmp_path_factory):
    """The demo model quantized in one profile, exported with float and with int8 weights."""
    profile, bits = request.param
    folder = tmp_path_factory.mktemp(f"int8_weights_{profile}")
    model, *_ = quantize_yolo(load_model("demo").fuse().eval(), profile, bits)
    calibrate(model, smooth_images(4, IMG).split(2), method="max", show_progress=False)
    plain = export_detector(model, folder / "float_weights.onnx", IMG)
    packed = export_detector(model, folder / "int8_weights.onnx", IMG, int8_weights=True)
    return profile, bits, plain, packed


def run(path, images: np.ndarray, optimized=None) -> np.ndarray:
    options = ort.SessionOptions()
    if optimized:
        options.optimized_model_filepath = str(optimized)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images})[0]


def test_outputs_equal_bit_for_bit(exports):
    _, _, plain, packed = exports
    images = smooth_images(3, IMG).numpy()
    assert np.array_equal(run(plain, images), run(packed, images))


def test_weights_are_int8_initializers_and_the_file_is_smaller(exports):
    _, bits, plain, packed = exports
    graph = onnx.load(str(packed)).graph
    initializers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    int8 = {name: value for name, value in initializers.items() if value.dtype == np.int8}
    dequantized = {node.input[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    quantized_convs = [node for node in graph.node if node.op_type == "Conv"
                       and any(node.input[1] == dq.output[0] for dq in graph.node
                               if dq.op_type == "DequantizeLinear" and dq.input[0] in int8)]
    assert len(quantized_convs) > 40 and set(int8) <= dequantized
    # No QuantizeLinear reads a stored tensor any more: weights are integers already.
    assert not [node for node in graph.node
                if node.op_type == "QuantizeLinear" and node.input[0] in initializers]
    high = 2 ** (bits - 1) - 1  # 7-bit weights stay on their own grid
    assert max(int(np.abs(value).max()) for value in int8.values()) <= high + 1
    ratio = packed.stat().st_size / plain.stat().st_size
    assert ratio < 0.35, ratio  # float biases, scales and the float head remain


def test_onnx_runtime_fuses_as_many_int8_kernels(exports, tmp_path):
    _, _, plain, packed = exports
    images = smooth_images(1, IMG).numpy()
    counts = []
    for path in (plain, packed):
        optimized = tmp_path / f"{path.stem}_optimized.onnx"
        run(path, images, optimized)
        counts.append(Counter(node.op_type for node in onnx.load(str(optimized)).graph.node))
    kernels = ("QLinearConv", "ConvInteger", "DequantizeLinear", "QuantizeLinear")
    assert {op: counts[0][op] for op in kernels} == {op: counts[1][op] for op in kernels}


def test_quantize_like_onnx_rounds_half_to_even_and_saturates():
    x = np.array([[0.5, 1.5, 2.5, -0.5], [300.0, -300.0, 0.26, -0.26]], dtype=np.float32)
    q = quantize_like_onnx(x, np.array([1.0, 0.5], np.float32), np.zeros(2, np.int8), axis=0)
    assert q.tolist() == [[0, 2, 2, 0], [127, -128, 1, -1]]
    unsigned = quantize_like_onnx(np.array([0.0, 1.0], np.float32), np.array(0.01, np.float32),
                                  np.array(128, np.uint8))
    assert unsigned.dtype == np.uint8 and unsigned.tolist() == [128, 228]


def test_a_pair_whose_integers_something_else_reads_is_left_alone():
    weight = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "z")
    nodes = [onnx.helper.make_node("QuantizeLinear", ["w", "s", "z"], ["q"]),
             onnx.helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
             onnx.helper.make_node("Cast", ["q"], ["cast"], to=onnx.TensorProto.FLOAT)]
    outputs = [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
               for name in ("dq", "cast")]
    graph = onnx.helper.make_graph(nodes, "g", [], outputs, [weight, scale, zero])
    proto = onnx.helper.make_model(graph)
    assert store_int8_weights(proto) == 0 and len(proto.graph.node) == 3
