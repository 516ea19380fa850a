"""PTQ beyond calibration: change a calibrated model's weights so that its quantized
layers reproduce their float outputs better, for any torch CNN.

- `correct_biases`: each quantized convolution's rounded weights shift the mean of its
  outputs, channel by channel; add the opposite shift to its bias (empirical bias
  correction, measured on calibration batches).
- `learn_rounding`: AdaRound. Nearest rounding is not the best rounding for a layer's
  output: for each weight, learn whether to round it down or up, so that the layer's
  output on calibration inputs is closest to its float output. One layer at a time,
  in model order, on the inputs the already-rounded model gives it.

Both leave the model's structure, its quantizers and their amax as they are and write
only `weight` and `bias`: the weights `learn_rounding` chooses lie on the quantizer's
grid, so that fake quantization, and an exported QuantizeLinear, give back exactly
them. The export is the same Q/DQ ONNX as plain PTQ. Both change what the model
computes with its quantizers off too (rounded weights, shifted biases): a teacher for
QAT or a float reference comes from the float model, not from the tuned one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from yoloq.console import progress
from yoloq.quant.calibrate import batch_images, model_device
from yoloq.quant.modules import QuantConv1d, QuantConv2d, QuantConv3d
from yoloq.quant.quantizer import QuantMode, TensorQuantizer

CONVOLUTIONS = (QuantConv1d, QuantConv2d, QuantConv3d)


def tunable_convolutions(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(path, module) of every convolution whose weights are fake-quantized, per tensor
    or per output channel, in model order."""
    found = []
    for path, module in model.named_modules():
        if isinstance(module, CONVOLUTIONS):
            quantizer = module.weight_quantizer
            if quantizer.mode == QuantMode.QUANTIZING and quantizer.amax is not None and \
                    quantizer.spec.axis in (0, None):
                found.append((path, module))
    return found


# --- bias correction ---------------------------------------------------------------------------


@torch.no_grad()
def correct_biases(model: nn.Module, data: Iterable, num_batches: int | None = None,
                   float_model: nn.Module | None = None,
                   show_progress: bool = True) -> dict[str, float]:
    """Shift each quantized convolution's bias by minus the mean output error its
    quantized weights cause, per output channel, on the inputs the quantized model gives
    it over `data`. The error is against the layer's own weights, or those of the same
    path in `float_model` (after `learn_rounding`, whose weights are already on the
    grid). One pass; returns {path: largest shift}, for the record."""
    convs = tunable_convolutions(model)
    sums = {path: None for path, _ in convs}
    counts = dict.fromkeys(sums, 0)
    references = {path: (float_model.get_submodule(path) if float_model is not None else
                         module).weight for path, module in convs}

    def hook_for(path: str):
        def hook(module, inputs, output):
            x = module.input_quantizer(inputs[0])
            reference = references[path].to(module.weight.device)
            error_weights = module.weight_quantizer(module.weight) - reference
            error = module._conv_forward(x, error_weights, None).double()
            channel_sums = error.transpose(0, 1).reshape(error.shape[1], -1).sum(1)
            sums[path] = channel_sums if sums[path] is None else sums[path] + channel_sums
            counts[path] += error.numel() // error.shape[1]

        return hook

    handles = [module.register_forward_hook(hook_for(path)) for path, module in convs]
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        for images in batch_images(data, num_batches, "bias correction", show_progress):
            model(images.to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    shifts = {}
    for path, module in convs:
        if counts[path] == 0:
            continue  # never reached by these inputs
        mean_error = (sums[path] / counts[path]).to(module.weight.dtype)
        if module.bias is None:
            module.bias = nn.Parameter(torch.zeros_like(mean_error))
        module.bias -= mean_error
        shifts[path] = float(mean_error.abs().max())
    return shifts


# --- learned rounding (AdaRound) ---------------------------------------------------------------


@dataclass(frozen=True)
class RoundingSettings:
    """AdaRound's optimisation, per layer (Nagel et al. 2020: the rectified sigmoid's
    stretch, the regulariser's weight and its annealed exponent)."""

    iterations: int = 400
    batch: int = 4  # calibration inputs per step
    lr: float = 1e-2
    regularization: float = 0.01
    warmup: float = 0.2  # fraction of the steps without the rounding regulariser
    beta: tuple[float, float] = (20.0, 2.0)
    inputs: int = 32  # calibration images whose inputs to each layer are kept


GAMMA, ZETA = -0.1, 1.1  # the rectified sigmoid's stretch: h reaches 0 and 1 exactly


def _rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0, 1)


def _channel_shape(weight: torch.Tensor, quantizer: TensorQuantizer) -> list[int]:
    shape = [1] * weight.dim()
    if quantizer.spec.axis is not None:
        shape[quantizer.spec.axis] = -1
    return shape


class _Rounding:
    """A layer's weights as floor(w / scale) plus a learned 0-or-1, within the grid."""

    def __init__(self, module: nn.Module):
        quantizer = module.weight_quantizer
        shape = _channel_shape(module.weight, quantizer)
        self.scale = quantizer._scale.reshape(shape).to(module.weight.dtype)
        self.low, self.high = quantizer.quant_range()
        scaled = module.weight.detach() / self.scale
        self.floor = torch.floor(scaled)
        fraction = (scaled - self.floor).clamp(0.01, 0.99)  # h(v) starts at nearest's side
        self.v = torch.log((fraction - GAMMA) / (ZETA - fraction)).requires_grad_()

    def weight(self, hard: bool = False) -> torch.Tensor:
        up = (self.v >= 0).to(self.floor.dtype) if hard else _rectified_sigmoid(self.v)
        return torch.clamp(self.floor + up, self.low, self.high) * self.scale

    def regularizer(self, beta: float) -> torch.Tensor:
        return torch.sum(1 - (2 * _rectified_sigmoid(self.v) - 1).abs().pow(beta))


def layer_inputs(model: nn.Module, module: nn.Module,
                 images: Sequence[torch.Tensor]) -> torch.Tensor:
    """What `module`'s input quantizer gives it when `model` runs `images` as it is now."""
    kept = []

    def hook(layer, inputs):
        kept.append(layer.input_quantizer(inputs[0]).detach())

    handle = module.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for batch in images:
                model(batch)
    finally:
        handle.remove()
    return torch.cat(kept)


def reconstruction_error(module: nn.Module, inputs: torch.Tensor, weight: torch.Tensor) -> float:
    """The error (`_output_error`) of the layer's output with `weight` against its float
    output, on `inputs`."""
    with torch.no_grad():
        reference = module._conv_forward(inputs, module.weight, module.bias)
        return float(_output_error(module._conv_forward(inputs, weight, module.bias),
                                   reference))


def _output_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error summed over channels, averaged over samples and positions (the
    reconstruction loss of AdaRound's implementations)."""
    return (output - target).pow(2).sum(1).mean()


def round_layer(module: nn.Module, inputs: torch.Tensor,
                settings: RoundingSettings = RoundingSettings(), seed: int = 0) -> torch.Tensor:
    """The weights on the layer's quantization grid whose outputs on `inputs` are closest
    to the float layer's (AdaRound); the layer itself is not changed."""
    rounding = _Rounding(module)
    optimizer = torch.optim.Adam([rounding.v], settings.lr)
    generator = torch.Generator().manual_seed(seed)
    bias = None if module.bias is None else module.bias.detach()
    with torch.no_grad():
        targets = module._conv_forward(inputs, module.weight, bias)
    warm = int(settings.warmup * settings.iterations)
    start, end = settings.beta
    for step in range(settings.iterations):
        pick = torch.randint(len(inputs), (min(settings.batch, len(inputs)),),
                             generator=generator).to(inputs.device)
        loss = _output_error(module._conv_forward(inputs[pick], rounding.weight(), bias),
                             targets[pick])
        if step >= warm:  # the regulariser pushes each h to 0 or 1, ever harder (beta falls)
            done = (step - warm) / max(settings.iterations - warm, 1)
            beta = end + 0.5 * (start - end) * (1 + math.cos(math.pi * done))
            loss = loss + settings.regularization * rounding.regularizer(beta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return rounding.weight(hard=True).detach()


def learn_rounding(model: nn.Module, data: Iterable,
                   settings: RoundingSettings = RoundingSettings(),
                   show_progress: bool = True) -> dict[str, tuple[float, float]]:
    """AdaRound every quantized convolution of `model`, in model order, each on the
    inputs the model (its earlier layers already rounded) gives it on the first
    `settings.inputs` images of `data`; writes the chosen weights into the model.
    Returns {path: (nearest rounding's output error, the learned rounding's)}."""
    device = model_device(model)
    images, count = [], 0
    for batch in batch_images(data, None, "", show_progress=False):
        images.append(batch[: settings.inputs - count].to(device))
        count += len(images[-1])
        if count >= settings.inputs:
            break
    was_training = model.training
    model.eval()
    errors = {}
    try:
        for index, (path, module) in enumerate(progress(tunable_convolutions(model),
                                                        "learned rounding",
                                                        enabled=show_progress)):
            inputs = layer_inputs(model, module, images)
            nearest = module.weight_quantizer(module.weight).detach()
            with torch.enable_grad():
                learned = round_layer(module, inputs, settings, seed=index)
            errors[path] = (reconstruction_error(module, inputs, nearest),
                            reconstruction_error(module, inputs, learned))
            with torch.no_grad():
                module.weight.copy_(learned)
    finally:
        model.train(was_training)
    return errors

