"""The ort profile as ONNX Runtime runs it: every SiLU and residual add of a quantized
YOLOv5-style model in int8 (QLinearSigmoid, QLinearMul, QLinearAdd), and the non-negative
grid its sigmoids are stored on."""

from collections import Counter
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn

from models_tiny import smooth_images
from yoloq.export import export_detector, export_onnx
from yoloq.export.onnx import constant_values
from yoloq.graph import quantizer_ties
from yoloq.models import load_model
from yoloq.models.quantized import QuantResidualSum, load_quantized, quantize_yolo, save_quantized
from yoloq.quant import QuantSpec, TensorQuantizer, calibrate, profile_config
from yoloq.quant.modules import QuantSiLU, sigmoid_output_spec

ORT_ACTIVATIONS = profile_config("ort").input_spec

IMG = 128


@pytest.fixture(scope="module", params=["demo-v5", "demo"])
def ort_model(request, tmp_path_factory):
    """A demo model in the ort profile (demo-v5: SiLU, residual bottlenecks, SPPF; demo:
    LeakyReLU, max-pool downsampling, SPPCSPC), exported, and the graph ONNX Runtime
    optimised it into."""
    folder = tmp_path_factory.mktemp("ort_profile")
    model, _, config = quantize_yolo(load_model(request.param).fuse().eval(), "ort", 8)
    calibrate(model, smooth_images(4, IMG).split(2), method="mse", show_progress=False)
    path = export_detector(model, folder / "ort.onnx", IMG, int8_weights=True)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(folder / "optimized.onnx")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(options.optimized_model_filepath).graph
    return request.param, model, config, session, graph


def count(model: nn.Module, kind) -> int:
    return sum(isinstance(m, kind) and hasattr(m, "output_quantizer") for m in model.modules())


def test_every_activation_sum_and_pool_runs_in_int8(ort_model):
    _, model, _, _, graph = ort_model
    ops = Counter(node.op_type for node in graph.node)
    silus, leaky = count(model, QuantSiLU), count(model, nn.LeakyReLU)
    assert silus + leaky > 0
    assert ops["QLinearSigmoid"] == ops["QLinearMul"] == silus
    assert ops["QLinearLeakyRelu"] == leaky
    assert ops["QLinearAdd"] == count(model, QuantResidualSum)
    assert ops["MaxPool"] >= count(model, nn.MaxPool2d) > 0  # on uint8: the next test


def test_no_float_op_reads_a_dequantized_activation(ort_model):
    """Between quantized layers nothing runs in float: where a DequantizeLinear is left,
    only the float head's convolutions read it (through a layout change), or a
    QuantizeLinear of the very same grid (an identity ONNX Runtime leaves in place)."""
    *_, graph = ort_model
    producer = {output: node for node in graph.node for output in node.output}
    values = constant_values(graph)
    readers = [(node, producer[name]) for node in graph.node for name in node.input
               if name in producer and producer[name].op_type == "DequantizeLinear"]

    def same_grid(q, dq):
        return all(np.array_equal(values[a], values[b]) for a, b in zip(q.input[1:],
                                                                         dq.input[1:]))

    readers = [node for node, dq in readers
               if not (node.op_type == "QuantizeLinear" and same_grid(node, dq))]
    assert readers and {node.op_type for node in readers} <= {"Conv", "FusedConv",
                                                              "ReorderInput"}
    reordered = {output for node in readers if node.op_type == "ReorderInput"
                 for output in node.output}
    later = {node.op_type for node in graph.node if set(node.input) & reordered}
    assert later <= {"Conv", "FusedConv"}


def test_onnxruntime_runs_the_model_torch_quantized(ort_model):
    """ONNX Runtime's integer kernels requantize where torch's fake quantization does
    not round, so the two differ; but by less than quantization moved torch's output
    from the float model's (a wrong grid, e.g. the sigmoid's zero point, would not)."""
    name, model, _, session, _ = ort_model
    float_model = load_model(name).fuse().eval()
    images = smooth_images(2, IMG, seed=5)
    with torch.no_grad():
        expected, reference = model(images)[0], float_model(images)[0]
    actual = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])

    def error(a, b):  # boxes and objectness, in pixels and probability
        return (a - b)[..., :5].abs().mean().item()

    assert error(actual, expected) < error(expected, reference)


def test_saved_ort_model_keeps_its_sums_grids_and_ties(ort_model, tmp_path):
    _, model, config, *_ = ort_model
    model.names = [str(i) for i in range(len(model.names))]
    loaded = load_quantized(save_quantized(model, tmp_path / "ptq.pt", "ort", config, IMG))
    assert count(loaded, QuantResidualSum) == count(model, QuantResidualSum)
    assert quantizer_ties(loaded) == quantizer_ties(model) != {}
    images = smooth_images(1, IMG, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images)[0], model(images)[0])


def test_a_sigmoid_output_gets_the_grid_0_to_1_in_255_steps_with_zero_point_0(tmp_path):
    quantizer = TensorQuantizer(sigmoid_output_spec(ORT_ACTIVATIONS), "sigmoid")
    calibrate(nn.Sequential(nn.Sigmoid(), quantizer), [torch.linspace(-6, 9, 100)],
              show_progress=False)
    assert 0 < quantizer.amin.item() < 0.01 and quantizer._zero_point.item() == 0
    x = torch.linspace(-0.1, 1.0, 2001)
    y = quantizer(x)
    assert y.min().item() == 0.0  # negatives saturate to the zero point
    assert torch.unique(y).numel() == 256
    assert (y - x.clamp(min=0, max=quantizer.amax.item())).abs().max().item() <= (
        0.5 / 255 + 1e-6)

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


@pytest.mark.parametrize("method", ["max", "mse"])
def test_asymmetric_grid_halves_the_steps_on_a_silu_output(method):
    """A SiLU's output (>= -0.28) on the asymmetric grid: the zero point sits where 0.0
    falls, the steps are about half those of the symmetric grid, and so is the error."""
    generator = torch.Generator().manual_seed(0)
    silu = torch.nn.functional.silu(torch.randn(20000, generator=generator) * 2)
    asymmetric = TensorQuantizer(ORT_ACTIVATIONS, "asymmetric")
    symmetric = TensorQuantizer(replace(ORT_ACTIVATIONS, asymmetric=False), "symmetric")
    for quantizer in (asymmetric, symmetric):
        calibrate(nn.Sequential(quantizer), [silu], method=method, show_progress=False)
    low = asymmetric.amin.item()
    assert low == silu.min().item() if method == "max" else silu.min().item() <= low < -0.2
    assert symmetric.amin is None
    scale = asymmetric._scale.item()
    assert scale == pytest.approx((asymmetric.amax.item() - low) / 255)
    assert asymmetric._zero_point.item() == round(-low / scale)
    assert scale < 0.6 * symmetric._scale.item()
    error = {name: (q(silu) - silu).pow(2).mean().item()
             for name, q in (("asymmetric", asymmetric), ("symmetric", symmetric))}
    assert error["asymmetric"] < 0.5 * error["symmetric"]


def grid_ends(x: torch.Tensor, method: str) -> tuple[float, float]:
    quantizer = TensorQuantizer(ORT_ACTIVATIONS, "q")
    calibrate(nn.Sequential(quantizer), [x], method=method, show_progress=False)
    return quantizer.amin.item(), quantizer.amax.item()


@pytest.mark.parametrize("method", ["mse", "percentile", "entropy"])
def test_each_end_of_an_asymmetric_grid_is_calibrated_on_its_own_side(method):
    """Stretching the positive values three times moves the upper end three times and
    leaves the lower end where it was (within a few bins), and the other way round."""
    generator = torch.Generator().manual_seed(1)
    x = torch.nn.functional.leaky_relu(torch.randn(200000, generator=generator) * 2, 0.1)
    low, high = grid_ends(x, method)
    assert x.min().item() <= low < -0.2 and 2.0 < high <= x.max().item() + 1e-3
    stretched_low, stretched_high = grid_ends(torch.where(x > 0, 3 * x, x), method)
    assert stretched_low == pytest.approx(low, rel=0.05)
    assert stretched_high == pytest.approx(3 * high, rel=0.05)
    deeper_low, same_high = grid_ends(torch.where(x < 0, 3 * x, x), method)
    assert deeper_low == pytest.approx(3 * low, rel=0.05)
    assert same_high == pytest.approx(high, rel=0.05)


def test_percentile_ends_are_each_sides_quantiles():
    generator = torch.Generator().manual_seed(2)
    x = torch.nn.functional.leaky_relu(torch.randn(200000, generator=generator) * 2, 0.1)
    low, high = grid_ends(x, "percentile")
    # Each side's histogram holds every value (the other side's at 0, as |x| holds a
    # ReLU's zeros), so its threshold leaves out 0.01% of all values, from that side.
    for side, end in ((-x[x < 0], -low), (x[x > 0], high)):
        left_out = 1e-4 * len(x) / len(side)
        assert end == pytest.approx(torch.quantile(side, 1 - left_out).item(), rel=0.02)


def test_asymmetric_grid_needs_unsigned_storage_per_tensor():
    with pytest.raises(ValueError, match="asymmetric"):
        QuantSpec(asymmetric=True)
    with pytest.raises(ValueError, match="asymmetric"):
        QuantSpec(unsigned=True, asymmetric=True, axis=0, calibrator="max")
    assert QuantSpec.from_dict(ORT_ACTIVATIONS.to_dict()) == ORT_ACTIVATIONS
