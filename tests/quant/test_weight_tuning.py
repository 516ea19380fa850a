"""Bias correction and learned rounding (AdaRound) on constructed layers whose rounding
errors are known."""

import torch
import torch.nn as nn

from yoloq.quant import QuantConfig, calibrate, quantize
from yoloq.quant.weight_tuning import (
    RoundingSettings,
    correct_biases,
    layer_inputs,
    learn_rounding,
    reconstruction_error,
    round_layer,
)


def quantized_conv(weight: torch.Tensor, images: torch.Tensor) -> nn.Module:
    """One 3x3 convolution with these weights, quantized (per-channel weights, per-tensor
    input) and calibrated on `images`."""
    model = nn.Sequential(nn.Conv2d(weight.shape[1], weight.shape[0], 3, padding=1))
    with torch.no_grad():
        model[0].weight.copy_(weight)
        model[0].bias.zero_()
    model, _ = quantize(model, QuantConfig())
    calibrate(model, [images], method="max", show_progress=False)
    return model


def smooth_images(count: int, channels: int, size: int) -> torch.Tensor:
    """Random 4x4 images upsampled to size x size."""
    coarse = torch.rand(count, channels, 4, 4)
    return nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)


def mean_output_error(model: nn.Module, float_weight: torch.Tensor,
                      images: torch.Tensor) -> torch.Tensor:
    """Per output channel: mean of (quantized layer - float layer) on the same input."""
    conv = model[0]
    with torch.no_grad():
        x = conv.input_quantizer(images)
        error = model(images) - conv._conv_forward(x, float_weight, torch.zeros_like(conv.bias))
    return error.mean((0, 2, 3))


def test_bias_correction_removes_the_mean_error_of_weights_all_rounded_down():
    torch.manual_seed(0)
    # Every weight 0.3 of a step above a grid point (the step of each channel is its
    # amax / 127, amax being the largest weight, on the grid): nearest rounding always
    # rounds down, and on positive inputs every output comes out too low.
    step = 0.01
    levels = torch.randint(-100, 100, (4, 3, 3, 3)).float()
    levels[:, 0, 0, 0] = 127
    weight = (levels + 0.3) * step
    weight[:, 0, 0, 0] = 127 * step
    images = torch.rand(8, 3, 16, 16)
    model = quantized_conv(weight, images)
    before = mean_output_error(model, weight, images)
    shifts = correct_biases(model, [images], show_progress=False)
    after = mean_output_error(model, weight, images)
    assert set(shifts) == {"0"}
    # about 26 weights x 0.3 steps x a mean input of 0.5 (fewer at the borders): ~ -0.035
    assert (before < -0.02).all(), before
    assert after.abs().max() < 1e-6, after
    assert torch.allclose(model[0].bias, -before, atol=1e-6)


def test_learned_rounding_beats_nearest_and_stays_on_the_grid():
    # Smooth inputs, as images and feature maps are: neighbouring values correlate, so
    # rounding errors of neighbouring weights can cancel. (On white noise they cannot,
    # and nearest rounding is about as good as any.)
    torch.manual_seed(0)
    images = smooth_images(16, 8, 12)
    model = quantized_conv(torch.randn(8, 8, 3, 3) * 0.1, images)
    conv = model[0]
    inputs = layer_inputs(model, conv, [images])
    nearest = conv.weight_quantizer(conv.weight).detach()
    learned = round_layer(conv, inputs, RoundingSettings(iterations=300, batch=8))
    error_nearest = reconstruction_error(conv, inputs, nearest)
    error_learned = reconstruction_error(conv, inputs, learned)
    assert error_learned < 0.5 * error_nearest, (error_nearest, error_learned)
    # Each learned weight is the float weight rounded down or up, never further.
    scale = conv.weight_quantizer._scale.reshape(-1, 1, 1, 1)
    levels = learned / scale
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert ((levels.round() - torch.floor(conv.weight / scale)).abs() <= 1 + 1e-6).all()
    assert not torch.equal(learned, nearest)  # some weights did round the other way


def test_learned_weights_written_into_the_model_quantize_to_themselves():
    """What an exported QuantizeLinear of the weights stores: the learned integers."""
    torch.manual_seed(1)
    images = smooth_images(8, 4, 10)
    model = quantized_conv(torch.randn(6, 4, 3, 3) * 0.2, images)
    errors = learn_rounding(model, [images], RoundingSettings(iterations=100, inputs=8),
                            show_progress=False)
    assert set(errors) == {"0"} and errors["0"][1] < errors["0"][0]
    conv = model[0]
    assert torch.equal(conv.weight_quantizer(conv.weight), conv.weight)
