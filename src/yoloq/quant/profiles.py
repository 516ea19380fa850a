"""Deployment profiles: where Q/DQ goes and in which types, for each runtime.

- `trt`: Q/DQ on the inputs of quantized layers, int8 symmetric, weights per
  channel. TensorRT fuses each Q into the producer's output itself, and wants no
  more Q/DQ than that (extra pairs break its Conv+activation fusions).
- `ort`: every tensor between two int8 ops quantized (layer inputs, layer outputs
  before the activation, activation and resampling outputs, a SiLU's sigmoid,
  residual sums), activations asymmetric in uint8 (the grid from the lowest value
  seen to amax), so that ONNX Runtime's CPU provider fuses each quantized Conv into
  QLinearConv, activations into QLinearLeakyRelu, QLinearSigmoid and QLinearMul,
  sums into QLinearAdd.
  `weight_bits=7` avoids the saturation of its u8s8 kernels on CPUs without VNNI.
"""

from __future__ import annotations

from collections.abc import Sequence

from yoloq.quant.spec import IgnoreRule, QuantConfig, QuantRule, QuantSpec

PROFILES = ("trt", "ort")


def int8_weights_default(profile: str) -> bool:
    """Whether exports store quantized weights as int8 by default: for the ort profile
    (ONNX Runtime and OpenVINO fold the int8 initializer into their kernels), not yet for
    trt (TensorRT documents the form, but no TensorRT build here has checked it)."""
    return profile == "ort"


def profile_config(
    profile: str,
    weight_bits: int = 8,
    ignore: Sequence[IgnoreRule] = (),
    rules: Sequence[QuantRule] = (),
    calibrator: str = "histogram",
) -> QuantConfig:
    """The QuantConfig of a deployment profile ("trt" or "ort")."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; use one of {PROFILES}")
    if profile == "trt":
        if weight_bits != 8:
            raise ValueError("the trt profile uses 8-bit weights (TensorRT has no 7-bit mode)")
        return QuantConfig(QuantSpec(calibrator=calibrator), ignore=tuple(ignore),
                           rules=tuple(rules))
    activations = QuantSpec(unsigned=True, asymmetric=True, calibrator=calibrator)
    return QuantConfig(activations, ignore=tuple(ignore), rules=tuple(rules),
                       weight_bits=weight_bits, output_spec=activations)
