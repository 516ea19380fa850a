import pytest
import torch
import torch.nn as nn

from yoloq.quant import QuantConfig, QuantSpec, TensorQuantizer, quantize


def reference_fake_quant(x, amax, bits=8, axis=None):
    """round-half-to-even(x / scale), clamped to [-2^(b-1), 2^(b-1)-1], times scale."""
    bound = 2 ** (bits - 1) - 1
    if axis is not None:
        shape = [1] * x.dim()
        shape[axis] = -1
        amax = amax.reshape(shape)
    scale = amax / bound
    return torch.clamp(torch.round(x / scale), -bound - 1, bound) * scale


def test_per_tensor_matches_reference():
    x = torch.randn(4, 8, 5, 5) * 3
    q = TensorQuantizer(QuantSpec())
    q.set_amax(2.5)  # some values are clipped
    assert torch.equal(q(x), reference_fake_quant(x, torch.tensor(2.5)))


@pytest.mark.parametrize("bits", [8, 7, 4])
def test_per_channel_matches_reference(bits):
    x = torch.randn(6, 3, 3, 3)
    amax = x.abs().amax(dim=(1, 2, 3)) * 0.8
    q = TensorQuantizer(QuantSpec(num_bits=bits, axis=0, calibrator="max"))
    q.set_amax(amax)
    assert torch.allclose(q(x), reference_fake_quant(x, amax, bits, axis=0), atol=1e-7)


def test_conv_transpose_weights_quantized_along_axis_1():
    model = nn.Sequential(nn.ConvTranspose2d(4, 6, 2, 2))
    quantize(model)
    layer = model[0]
    assert layer.weight_quantizer.spec.axis == 1
    amax = layer.weight.detach().abs().amax(dim=(0, 2, 3))
    layer.weight_quantizer.set_amax(amax)
    expected = reference_fake_quant(layer.weight.detach(), amax, axis=1)
    assert torch.equal(layer.weight_quantizer(layer.weight.detach()), expected)


def test_unsigned_storage_keeps_the_signed_grid():
    x = torch.randn(1000)
    signed, unsigned = TensorQuantizer(QuantSpec()), TensorQuantizer(QuantSpec(unsigned=True))
    signed.set_amax(2.0)
    unsigned.set_amax(2.0)
    assert torch.equal(signed(x), unsigned(x))
    assert unsigned._zero_point.item() == 128


def test_zero_amax_gives_no_nan():
    q = TensorQuantizer(QuantSpec(axis=0, calibrator="max"))
    x = torch.randn(3, 4)
    x[1] = 0
    q.set_amax(x.abs().amax(dim=1))
    y = q(x)
    assert torch.isfinite(y).all()
    assert torch.equal(y[1], torch.zeros(4))


def test_missing_amax_names_the_module():
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    quantize(model)
    with pytest.raises(RuntimeError, match=r"0\.input_quantizer has no amax"):
        model(torch.randn(1, 3, 8, 8))


def test_amax_survives_state_dict_roundtrip():
    source = nn.Sequential(nn.Conv2d(3, 4, 3))
    quantize(source)
    source[0].input_quantizer.set_amax(1.5)
    source[0].weight_quantizer.set_amax(torch.rand(4) + 0.1)
    target = nn.Sequential(nn.Conv2d(3, 4, 3))
    quantize(target, QuantConfig())
    target.load_state_dict(source.state_dict())
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(target(x), source(x))
    assert "0.input_quantizer.amax" in source.state_dict()
    assert "0.input_quantizer._scale" not in source.state_dict()


def test_gradients_pass_straight_through():
    x = torch.randn(100, requires_grad=True)
    q = TensorQuantizer(QuantSpec())
    q.set_amax(1.0)
    q(x).sum().backward()
    # Inside the range the gradient is 1, outside it is 0 (clipped).
    assert torch.equal(x.grad, (x.abs() <= 1.0 + 1 / 254).float())


@pytest.mark.parametrize("spec", [QuantSpec(), QuantSpec(num_bits=7), QuantSpec(unsigned=True)],
                         ids=["int8", "int7", "uint8"])
def test_cpu_fake_quantization_equals_torchs_op_values_and_gradient(spec):
    """The quantizer's own CPU path (faster than torch's kernel) against torch's op, on
    values past amax and exactly half-way between two steps (rounded half to even)."""
    torch.manual_seed(0)
    quantizer = TensorQuantizer(spec)
    quantizer.set_amax(2.5)
    scale = quantizer._scale
    x = torch.randn(20000) * 3
    x[:2000] = (torch.randint(-300, 300, (2000,)).float() + 0.5) * scale
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    low, high = quantizer.quant_range()
    expected = torch.fake_quantize_per_tensor_affine(theirs, scale, quantizer._zero_point,
                                                     low, high)
    got = quantizer(ours)
    (got * x).sum().backward()
    (expected * x).sum().backward()
    assert torch.equal(got, expected)
    assert torch.equal(ours.grad, theirs.grad)
    assert 0 < (ours.grad == 0).sum() < len(x)  # values past the range pass no gradient
