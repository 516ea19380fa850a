"""The ort profile as ONNX Runtime runs it: every SiLU and residual add of a quantized
YOLOv5-style model in int8 (QLinearSigmoid, QLinearMul, QLinearAdd), and the non-negative
grid its sigmoids are stored on."""

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn

from models_tiny import smooth_images
from yoloq.export import export_detector, export_onnx
from yoloq.export.onnx import constant_values
from yoloq.models import load_model
from yoloq.models.quantized import QuantResidualSum, load_quantized, quantize_yolo, save_quantized
from yoloq.quant import QuantSpec, TensorQuantizer, calibrate
from yoloq.quant.modules import QuantSiLU

IMG = 128


@pytest.fixture(scope="module")
def demo_v5(tmp_path_factory):
    """demo-v5 (SiLU, residual bottlenecks) in the ort profile, exported, and the graph
    ONNX Runtime optimised it into."""
    folder = tmp_path_factory.mktemp("ort_profile")
    model, _, config = quantize_yolo(load_model("demo-v5").fuse().eval(), "ort", 8)
    calibrate(model, smooth_images(4, IMG).split(2), method="max", show_progress=False)
    path = export_detector(model, folder / "ort.onnx", IMG, int8_weights=True)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(folder / "optimized.onnx")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return model, config, session, onnx.load(options.optimized_model_filepath).graph


def test_every_silu_and_residual_add_runs_in_int8(demo_v5):
    model, _, _, graph = demo_v5
    ops = Counter(node.op_type for node in graph.node)
    silus = sum(isinstance(m, QuantSiLU) for m in model.modules())
    adds = sum(isinstance(m, QuantResidualSum) for m in model.modules())
    assert silus > 0 and ops["QLinearSigmoid"] == silus and ops["QLinearMul"] == silus
    assert adds > 0 and ops["QLinearAdd"] == adds


def test_no_float_op_reads_a_dequantized_activation(demo_v5):
    """Between quantized layers nothing runs in float: where a DequantizeLinear is left,
    only the float head's convolutions read it."""
    *_, graph = demo_v5
    producer = {output: node for node in graph.node for output in node.output}
    readers = [node for node in graph.node for name in node.input
               if name in producer and producer[name].op_type == "DequantizeLinear"]
    assert readers and {node.op_type for node in readers} <= {"Conv", "FusedConv"}


def test_onnxruntime_runs_the_model_torch_quantized(demo_v5):
    """ONNX Runtime's integer kernels requantize where torch's fake quantization does
    not round, so the two differ; but by less than quantization moved torch's output
    from the float model's (a wrong grid, e.g. the sigmoid's zero point, would not)."""
    model, _, session, _ = demo_v5
    float_model = load_model("demo-v5").fuse().eval()
    images = smooth_images(2, IMG, seed=5)
    with torch.no_grad():
        expected, reference = model(images)[0], float_model(images)[0]
    actual = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    def error(a, b):  # boxes and objectness, in pixels and probability
        return (a - b)[..., :5].abs().mean().item()
    assert error(actual, expected) < error(expected, reference)


def test_saved_ort_model_keeps_its_residual_sums(demo_v5, tmp_path):
    model, config, *_ = demo_v5
    model.names = [str(i) for i in range(len(model.names))]
    loaded = load_quantized(save_quantized(model, tmp_path / "ptq.pt", "ort", config, IMG))
    assert sum(isinstance(m, QuantResidualSum) for m in loaded.modules()) > 0
    images = smooth_images(1, IMG, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images)[0], model(images)[0])


def test_non_negative_grid_has_255_steps_and_exports_with_zero_point_0(tmp_path):
    spec = QuantSpec(unsigned=True, non_negative=True, calibrator="max")
    quantizer = TensorQuantizer(spec, "sigmoid")
    quantizer.set_amax(1.0)
    x = torch.linspace(-0.1, 1.0, 2001)
    y = quantizer(x)
    assert y.min().item() == 0.0  # negatives saturate to the zero point
    assert torch.unique(y).numel() == 256
    assert (y - x.clamp(min=0)).abs().max().item() <= 0.5 / 255 + 1e-7

    class Sigmoid(nn.Module):
        def __init__(self):
            super().__init__()
            self.quantizer = quantizer

        def forward(self, t):
            return self.quantizer(torch.sigmoid(t))

    path = export_onnx(Sigmoid(), tmp_path / "sigmoid.onnx", torch.zeros(1, 4))
    graph = onnx.load(str(path)).graph
    values = constant_values(graph)
    zero_points = [values[node.input[2]] for node in graph.node
                   if node.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(zero_points) == 2
    assert all(z.dtype == np.uint8 and not z.any() for z in zero_points)
    logits = torch.linspace(-8, 8, 64).reshape(16, 4)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run(None, {session.get_inputs()[0].name: logits.numpy()})[0]
    np.testing.assert_allclose(actual, quantizer(torch.sigmoid(logits)).numpy(), atol=1e-6)


def test_non_negative_grid_needs_unsigned_storage_and_max_calibration():
    with pytest.raises(ValueError, match="non-negative"):
        QuantSpec(non_negative=True, calibrator="max")
    with pytest.raises(ValueError, match="non-negative"):
        QuantSpec(unsigned=True, non_negative=True)
    spec = QuantSpec(unsigned=True, non_negative=True, calibrator="max", num_bits=7)
    assert (spec.max_bound, spec.zero_point) == (127, 0)
    assert QuantSpec.from_dict(spec.to_dict()) == spec
