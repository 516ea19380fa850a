"""Quantized versions of torch modules, and of the element-wise ops CNNs use.

A float module becomes quantized *in place*: its class is swapped for the
quantized subclass and quantizers are attached as children. Weights, hooks,
extra attributes and the module's path all stay as they were, so models whose
forward reads attributes of their layers (YOLO's `.f`, `.i`) keep working.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from yoloq.quant.quantizer import TensorQuantizer
from yoloq.quant.spec import QuantSpec


class QuantModule(nn.Module):
    """Base of quantized modules: an input quantizer, a weight quantizer where the module
    has weights, and optionally an output quantizer (for ONNX Runtime's QLinear kernels,
    which need every tensor between two int8 ops quantized)."""

    has_weight = False
    default_weight_axis = 0

    @classmethod
    def from_float(
        cls,
        module: nn.Module,
        path: str,
        input_spec: QuantSpec,
        weight_spec: QuantSpec | None,
        output_spec: QuantSpec | None = None,
    ) -> nn.Module:
        """Turn `module` into an instance of `cls` in place, and attach its quantizers."""
        module.__class__ = cls
        module.attach_quantizers(path, input_spec, weight_spec)
        if output_spec is not None:
            module.output_quantizer = TensorQuantizer(output_spec, _join(path, "output_quantizer"))
        return module

    def attach_quantizers(self, path: str, input_spec: QuantSpec, weight_spec: QuantSpec | None):
        self.input_quantizer = TensorQuantizer(input_spec, _join(path, "input_quantizer"))
        if self.has_weight:
            self.weight_quantizer = TensorQuantizer(weight_spec, _join(path, "weight_quantizer"))

    def quantize_output(self, y: torch.Tensor) -> torch.Tensor:
        quantizer = getattr(self, "output_quantizer", None)
        return y if quantizer is None else quantizer(y)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class _QuantConvNd(QuantModule):
    has_weight = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_quantizer(x)
        return self.quantize_output(self._conv_forward(x, self.weight_quantizer(self.weight),
                                                       self.bias))


class QuantConv1d(nn.Conv1d, _QuantConvNd):
    forward = _QuantConvNd.forward


class QuantConv2d(nn.Conv2d, _QuantConvNd):
    forward = _QuantConvNd.forward


class QuantConv3d(nn.Conv3d, _QuantConvNd):
    forward = _QuantConvNd.forward


class _QuantConvTransposeNd(QuantModule):
    has_weight = True
    default_weight_axis = 1  # ConvTranspose weights are (in, out / groups, ...)
    _spatial_dims = 2
    _functional = staticmethod(F.conv_transpose2d)

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        output_padding = self._output_padding(
            x, output_size, self.stride, self.padding, self.kernel_size,
            self._spatial_dims, self.dilation,
        )
        y = self._functional(
            self.input_quantizer(x), self.weight_quantizer(self.weight), self.bias,
            self.stride, self.padding, output_padding, self.groups, self.dilation,
        )
        return self.quantize_output(y)


class QuantConvTranspose1d(nn.ConvTranspose1d, _QuantConvTransposeNd):
    _spatial_dims = 1
    _functional = staticmethod(F.conv_transpose1d)
    forward = _QuantConvTransposeNd.forward


class QuantConvTranspose2d(nn.ConvTranspose2d, _QuantConvTransposeNd):
    forward = _QuantConvTransposeNd.forward


class QuantConvTranspose3d(nn.ConvTranspose3d, _QuantConvTransposeNd):
    _spatial_dims = 3
    _functional = staticmethod(F.conv_transpose3d)
    forward = _QuantConvTransposeNd.forward


class QuantLinear(nn.Linear, QuantModule):
    has_weight = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(self.input_quantizer(x), self.weight_quantizer(self.weight), self.bias)
        return self.quantize_output(y)


class _QuantInputOnly(QuantModule):
    """Pooling layers: quantize the input, then run the float module's own forward."""

    _float_class: type[nn.Module]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantize_output(self._float_class.forward(self, self.input_quantizer(x)))


def _input_only(float_class: type[nn.Module]) -> type[nn.Module]:
    attributes = {"forward": _QuantInputOnly.forward, "_float_class": float_class,
                  "__module__": __name__}
    return type("Quant" + float_class.__name__, (float_class, _QuantInputOnly), attributes)


class _QuantMaxPool(_QuantInputOnly):
    """Max pooling: where the config quantizes outputs, the output quantizer is the input
    quantizer itself. The max of values on a grid is on that grid, so one scale and zero
    point carry through, and ONNX Runtime drops the DequantizeLinear / QuantizeLinear
    pair around the pool (it pools the uint8 tensor); calibrated apart, the output's
    higher minimum would give it another zero point, and the pool would run in float."""

    @classmethod
    def from_float(cls, module, path, input_spec, weight_spec, output_spec=None):
        module.__class__ = cls
        module.attach_quantizers(path, input_spec, weight_spec)
        if output_spec is not None:
            module.output_quantizer = module.input_quantizer
        return module


def _max_pool(float_class: type[nn.Module]) -> type[nn.Module]:
    attributes = {"forward": _QuantInputOnly.forward, "_float_class": float_class,
                  "__module__": __name__}
    return type("Quant" + float_class.__name__, (float_class, _QuantMaxPool), attributes)


QuantMaxPool1d = _max_pool(nn.MaxPool1d)
QuantMaxPool2d = _max_pool(nn.MaxPool2d)
QuantMaxPool3d = _max_pool(nn.MaxPool3d)
QuantAvgPool1d = _input_only(nn.AvgPool1d)
QuantAvgPool2d = _input_only(nn.AvgPool2d)
QuantAvgPool3d = _input_only(nn.AvgPool3d)
QuantAdaptiveAvgPool1d = _input_only(nn.AdaptiveAvgPool1d)
QuantAdaptiveAvgPool2d = _input_only(nn.AdaptiveAvgPool2d)
QuantAdaptiveAvgPool3d = _input_only(nn.AdaptiveAvgPool3d)


class Add(nn.Module):
    """`a + b` as a module, so that `quantize` can find a residual add and quantize it."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class Concat(nn.Module):
    """`torch.cat(tensors, dim)` as a module, so that `quantize` can find it."""

    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, tensors: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.cat(tensors, self.dim)


class QuantAdd(Add, QuantModule):
    """`a + b` with a quantizer on each input, for residual adds in custom forwards.

    Disable one input's quantizer to leave that branch float (TensorRT fuses a
    Conv with a following Add when only the other, identity, input carries Q/DQ).
    """

    def __init__(self, input_spec: QuantSpec | None = None, name: str = ""):
        nn.Module.__init__(self)
        self.attach_quantizers(name, input_spec or QuantSpec())

    def attach_quantizers(self, path: str, input_spec: QuantSpec, weight_spec=None) -> None:
        self.input0_quantizer = TensorQuantizer(input_spec, _join(path, "input0_quantizer"))
        self.input1_quantizer = TensorQuantizer(input_spec, _join(path, "input1_quantizer"))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.quantize_output(self.input0_quantizer(a) + self.input1_quantizer(b))


class QuantConcat(Concat, QuantModule):
    """`torch.cat(tensors, dim)` with one quantizer shared by every input.

    One quantizer means one scale for all inputs, which is what TensorRT needs to
    concatenate INT8 tensors without reformatting them.
    """

    def __init__(self, dim: int = 1, input_spec: QuantSpec | None = None, name: str = ""):
        Concat.__init__(self, dim)
        self.attach_quantizers(name, input_spec or QuantSpec())

    def forward(self, tensors: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.quantize_output(torch.cat([self.input_quantizer(t) for t in tensors], self.dim))


class _QuantOutputOnly(QuantModule):
    """Activations and resampling: quantize the output only (their input is already the
    quantized output of the layer before). Used when a config asks for output quantizers."""

    _float_class: type[nn.Module]

    @classmethod
    def from_float(cls, module, path, input_spec, weight_spec, output_spec=None):
        module.__class__ = cls
        module.output_quantizer = TensorQuantizer(output_spec or input_spec,
                                                  _join(path, "output_quantizer"))
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_quantizer(self._float_class.forward(self, x))


def _output_only(float_class: type[nn.Module]) -> type[nn.Module]:
    attributes = {"forward": _QuantOutputOnly.forward, "_float_class": float_class,
                  "__module__": __name__}
    return type("Quant" + float_class.__name__, (float_class, _QuantOutputOnly), attributes)


class QuantSiLU(nn.SiLU, QuantModule):
    """SiLU as `x * sigmoid(x)` with the sigmoid's output quantized too (where the
    activations are unsigned, on the asymmetric grid: [0, 1] in 255 steps), and the
    product at the output.

    With every tensor of the pair quantized, ONNX Runtime turns the exported Sigmoid and
    Mul into QLinearSigmoid and QLinearMul; with the sigmoid float they stay float ops
    between a DequantizeLinear and a QuantizeLinear (yolov5s: 60 of each)."""

    @classmethod
    def from_float(cls, module, path, input_spec, weight_spec, output_spec=None):
        module.__class__ = cls
        spec = output_spec or input_spec
        module.sigmoid_quantizer = TensorQuantizer(sigmoid_output_spec(spec),
                                                   _join(path, "sigmoid_quantizer"))
        module.output_quantizer = TensorQuantizer(spec, _join(path, "output_quantizer"))
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_quantizer(x * self.sigmoid_quantizer(torch.sigmoid(x)))


def sigmoid_output_spec(spec: QuantSpec) -> QuantSpec:
    """The spec of a sigmoid's output next to activations of `spec`: its bits, the
    asymmetric grid where the storage is unsigned (the sigmoid is never negative, so
    the grid is [0, amax]), calibrated by max (about 1)."""
    return replace(spec, calibrator="max", error_space="linear", asymmetric=spec.unsigned)


# Modules quantized at their output only, when the config asks for output quantizers.
OUTPUT_QUANT_MODULES: dict[type[nn.Module], type[nn.Module]] = {
    cls: _output_only(cls)
    for cls in (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish, nn.Sigmoid, nn.Upsample)
}
OUTPUT_QUANT_MODULES[nn.SiLU] = QuantSiLU


# The default map from float module types to their quantized versions.
DEFAULT_QUANT_MODULES: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv1d: QuantConv1d,
    nn.Conv2d: QuantConv2d,
    nn.Conv3d: QuantConv3d,
    nn.ConvTranspose1d: QuantConvTranspose1d,
    nn.ConvTranspose2d: QuantConvTranspose2d,
    nn.ConvTranspose3d: QuantConvTranspose3d,
    nn.Linear: QuantLinear,
    nn.MaxPool1d: QuantMaxPool1d,
    nn.MaxPool2d: QuantMaxPool2d,
    nn.MaxPool3d: QuantMaxPool3d,
    nn.AvgPool1d: QuantAvgPool1d,
    nn.AvgPool2d: QuantAvgPool2d,
    nn.AvgPool3d: QuantAvgPool3d,
    nn.AdaptiveAvgPool1d: QuantAdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d: QuantAdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d: QuantAdaptiveAvgPool3d,
    Add: QuantAdd,
    Concat: QuantConcat,
}


def register_quant_module(float_class: type[nn.Module], quant_class: type[nn.Module]) -> None:
    """Add (or replace) an entry of the default map used by `quantize`.

    `quant_class` must provide `from_float(module, path, input_spec, weight_spec)`
    returning the quantized module (subclassing `QuantModule` gives it one).
    """
    if not hasattr(quant_class, "from_float"):
        raise TypeError(f"{quant_class.__name__} has no from_float(module, path, input_spec, "
                        "weight_spec)")
    DEFAULT_QUANT_MODULES[float_class] = quant_class
