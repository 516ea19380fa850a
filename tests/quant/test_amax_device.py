"""amax lives where its module lives, whatever device computed it, and is always valid."""

import copy

import pytest
import torch
import torch.nn as nn

from yoloq.errors import YoloqError
from yoloq.quant import (
    HistogramCalibrator,
    MaxCalibrator,
    QuantSpec,
    TensorQuantizer,
    calibrate,
    iter_quantizers,
    quantize,
)

METHODS = ("max", "entropy", "mse", "percentile")


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))


def test_set_amax_copies_a_cpu_amax_to_the_module_device():
    model, _ = quantize(small_cnn())
    model.to("meta")
    layer = model[2]
    layer.input_quantizer.set_amax(torch.tensor(1.5))
    layer.weight_quantizer.set_amax(torch.rand(4) + 0.1)
    for quantizer in (layer.input_quantizer, layer.weight_quantizer):
        assert quantizer.amax.device.type == "meta"
        assert quantizer._scale.device.type == "meta"


def test_amax_moves_with_the_module_and_is_a_copy():
    model, _ = quantize(small_cnn())
    given = torch.tensor(2.0)
    model[0].input_quantizer.set_amax(given)
    given.fill_(5.0)
    assert model[0].input_quantizer.amax.item() == 2.0
    model.to("meta")
    assert model[0].input_quantizer.amax.device.type == "meta"


@pytest.mark.parametrize("method", METHODS)
def test_a_calibrated_amax_goes_to_the_module_device(method):
    calibrator = MaxCalibrator() if method == "max" else HistogramCalibrator()
    calibrator.collect(torch.randn(2, 3, 16, 16))
    amax = calibrator.compute_amax() if method == "max" else calibrator.compute_amax(method)
    assert amax.device.type == "cpu" and amax.item() > 0
    model, _ = quantize(small_cnn())
    model.to("meta")
    model[0].input_quantizer.set_amax(amax)
    assert model[0].input_quantizer.amax.device.type == "meta"


@pytest.mark.xfail(strict=True, reason="quantize() creates quantizers on the CPU, not on the "
                   "device of the model they go into (insert.py / modules.py)")
def test_quantizers_inserted_into_a_moved_model_live_with_it():
    model, _ = quantize(small_cnn().to("meta"))
    model[0].input_quantizer.set_amax(1.0)
    assert model[0].input_quantizer.amax.device.type == "meta"


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan"), -1.0])
def test_set_amax_refuses_non_finite_and_negative_values(bad):
    quantizer = TensorQuantizer(QuantSpec(), "layer.input_quantizer")
    with pytest.raises(YoloqError, match=r"layer\.input_quantizer: amax must be finite and "
                       "non-negative"):
        quantizer.set_amax(bad)
    assert quantizer.amax is None
    per_channel = TensorQuantizer(QuantSpec(axis=0, calibrator="max"), "w")
    with pytest.raises(YoloqError, match="w: amax"):
        per_channel.set_amax(torch.tensor([1.0, bad, 2.0]))


def test_a_checkpoint_with_an_infinite_amax_is_refused():
    model, _ = quantize(small_cnn())
    state = {**model.state_dict(), "0.input_quantizer.amax": torch.tensor(float("inf"))}
    with pytest.raises(YoloqError, match=r"0\.input_quantizer: amax must be finite"):
        model.load_state_dict(state, strict=False)


def integer_cnn() -> nn.Module:
    """Integer weights, biases and inputs keep every activation an exact integer on any
    device (TF32 included), so CPU and CUDA calibrate on identical tensors."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                          nn.Conv2d(8, 4, 1))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for conv in model[::2]:
            conv.weight.copy_(torch.randint(-1, 2, conv.weight.shape, generator=generator))
            conv.bias.copy_(torch.randint(-2, 3, conv.bias.shape, generator=generator))
    return model


@pytest.mark.gpu
@pytest.mark.parametrize("method", METHODS)
def test_cuda_calibration_keeps_amax_on_cuda_and_equals_the_cpu_run(method):
    model, _ = quantize(integer_cnn())
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 5, (2, 3, 24, 24), generator=generator).float()
               for _ in range(3)]
    on_cpu, on_cuda = copy.deepcopy(model), copy.deepcopy(model).cuda()
    calibrate(on_cpu, batches, method=method, show_progress=False)
    calibrate(on_cuda, batches, method=method, show_progress=False)
    pairs = list(zip(iter_quantizers(on_cpu), iter_quantizers(on_cuda)))
    assert len(pairs) == 6
    for (path, cpu_quantizer), (_, cuda_quantizer) in pairs:
        assert cuda_quantizer.amax.device.type == "cuda", path
        assert cuda_quantizer._scale.device.type == "cuda", path
        torch.testing.assert_close(cuda_quantizer.amax.cpu(), cpu_quantizer.amax, rtol=1e-5,
                                   atol=0, msg=path)
    output = on_cuda(batches[0].cuda())  # fake quantization with those scales runs on CUDA
    assert output.device.type == "cuda" and torch.isfinite(output).all()
