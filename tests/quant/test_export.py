import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

from models_tiny import smooth_images
from yoloq.export import export_onnx
from yoloq.quant import QuantSpec, TensorQuantizer, calibrate, quantize
from yoloq.runtime import OrtModel


class QuantizedOutput(nn.Module):
    """A tiny CNN whose output is itself quantized, so 'one step' is well defined."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 4, 1),
        )
        self.output_quantizer = TensorQuantizer(QuantSpec(calibrator="max"), "output_quantizer")

    def forward(self, x):
        return self.output_quantizer(self.features(x))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = QuantizedOutput().eval()
    quantize(model)
    calibrate(model, smooth_images(32).split(8), method="mse", show_progress=False)
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "tiny.onnx", smooth_images(1))
    return model, path


def test_graph_has_qdq_with_per_channel_weights(exported):
    _, path = exported
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    initializers = {init.name for init in graph.initializer}
    weight_q = [n for n in graph.node if n.op_type == "QuantizeLinear"
                and n.input[0] in initializers and n.input[0].endswith("weight")]
    assert len(weight_q) == 3
    for node in weight_q:
        assert {a.name: a.i for a in node.attribute}.get("axis", 1) == 0
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") == ops.count("DequantizeLinear") == 3 + 4 + 1
    assert "Cast" not in ops


def test_onnxruntime_matches_torch_within_one_output_step(exported):
    model, path = exported
    x = smooth_images(3, seed=11)  # batch 3: the batch axis is dynamic
    with torch.no_grad():
        expected = model(x)
    actual = OrtModel(path)(x)
    step = model.output_quantizer._scale.item()
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max().item() <= step * 1.001


def test_export_refuses_uncalibrated_models_and_old_opsets(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 3, 1))
    quantize(model)
    with pytest.raises(ValueError, match="no amax"):
        export_onnx(model, tmp_path / "m.onnx", torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, tmp_path / "m.onnx", torch.rand(1, 3, 8, 8), opset=12)
    assert not list(tmp_path.iterdir())


def test_disabled_quantizers_export_no_qdq(tmp_path):
    from yoloq.quant import disable_quantization

    model = nn.Sequential(nn.Conv2d(3, 3, 1))
    quantize(model)
    x = torch.rand(1, 3, 8, 8)
    with disable_quantization(model):
        path = export_onnx(model, tmp_path / "float.onnx", x)
        expected = model(x).detach().numpy()
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops == ["Conv"]
    np.testing.assert_allclose(OrtModel(path)(x).numpy(), expected, atol=1e-6)
