"""Quantizers below 8 bits export on the grid torch used, also for values past amax:
QuantizeLinear saturates only to the 8-bit range, so weights are stored clamped to their
own range and activations pass a Clip first. Checked against ONNX Runtime."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn

from models_tiny import smooth_images
from yoloq.export import export_onnx
from yoloq.quant import QuantConfig, QuantSpec, TensorQuantizer, calibrate, quantize


class ConvNet(nn.Module):
    """One Conv with a quantized output, so that 'one step' of the result is defined."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.output_quantizer = TensorQuantizer(QuantSpec(calibrator="max"), "output_quantizer")

    def forward(self, x):
        return self.output_quantizer(self.conv(x))


def calibrated(input_spec: QuantSpec, weight_spec: QuantSpec | None = None) -> ConvNet:
    torch.manual_seed(0)
    model = ConvNet().eval()
    quantize(model, QuantConfig(input_spec=input_spec, weight_spec=weight_spec))
    calibrate(model, smooth_images(8).split(4), method="max", show_progress=False)
    return model


def fit_output_step(model: ConvNet, images: torch.Tensor) -> float:
    """Set the output amax to what the Conv now computes (moved weights or inputs would
    otherwise saturate the output and hide any difference); returns one output step."""
    with torch.no_grad():
        model.output_quantizer.set_amax(model.conv(images).abs().max())
    return model.output_quantizer._scale.item()


def run_ort(path, images: torch.Tensor, extra_output: str | None = None) -> list[np.ndarray]:
    """The model's output (and `extra_output`, an inner tensor) from ONNX Runtime."""
    proto = onnx.load(str(path))
    if extra_output is not None:
        proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(extra_output))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images.numpy()})


def max_error(actual: np.ndarray, expected: torch.Tensor) -> float:
    return (torch.from_numpy(actual) - expected).abs().max().item()


def weight_qdq(path) -> tuple[onnx.NodeProto, onnx.NodeProto, set[str]]:
    graph = onnx.load(str(path)).graph
    stored = {init.name for init in graph.initializer}
    q = next(n for n in graph.node if n.op_type == "QuantizeLinear" and "weight" in n.name)
    dq = next(n for n in graph.node if n.op_type == "DequantizeLinear" and q.output[0] in n.input)
    return q, dq, stored


@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
@pytest.mark.parametrize("bits", [4, 6, 7, 8])
def test_weights_moved_past_amax_export_the_integers_torch_used(tmp_path, bits, per_channel):
    spec = QuantSpec(num_bits=bits, axis=0 if per_channel else None, calibrator="max")
    model = calibrated(QuantSpec(calibrator="max"), spec)
    with torch.no_grad():
        model.conv.weight[:, 0] *= 3  # as QAT may move them: now past amax
    images = smooth_images(2, seed=5)
    step = fit_output_step(model, images)
    path = export_onnx(model, tmp_path / "m.onnx", images[:1])

    q, dq, stored = weight_qdq(path)
    assert q.input[0] == "conv.weight" and q.input[0] in stored  # folded, still a weight
    output, weight = run_ort(path, images, dq.output[0])
    quantizer = model.conv.weight_quantizer
    with torch.no_grad():
        expected_weight = quantizer(model.conv.weight)
        expected = model(images)
    scale = quantizer._scale.reshape(-1, 1, 1, 1) if per_channel else quantizer._scale
    weight_steps = ((torch.from_numpy(weight) - expected_weight) / scale).abs().max().item()
    assert weight_steps <= 1.0  # the same integers, bar rounding x/scale vs x*(1/scale)
    assert max_error(output, expected) <= step * 1.001


@pytest.mark.parametrize("bits, unsigned", [(4, False), (4, True), (7, False), (8, False)])
def test_activations_below_8_bits_pass_a_clip_and_match_past_amax(tmp_path, bits, unsigned):
    model = calibrated(QuantSpec(num_bits=bits, unsigned=unsigned, calibrator="max"))
    images = smooth_images(2, seed=7) * 3 - 1  # far outside the calibrated 0..1
    step = fit_output_step(model, images)
    path = export_onnx(model, tmp_path / "m.onnx", images[:1])

    (output,) = run_ort(path, images)
    with torch.no_grad():
        expected = model(images)
    assert max_error(output, expected) <= step * 1.001
    graph = onnx.load(str(path)).graph
    producer = {out: node.op_type for node in graph.node for out in node.output}
    q = next(n for n in graph.node if n.op_type == "QuantizeLinear" and "input_q" in n.name)
    assert producer.get(q.input[0]) == ("Clip" if bits < 8 else None)  # 8 bits: the input
