"""Quantizing YOLO models, and the quantized checkpoint (`ptq.pt`, `qat.pt`).

The checkpoint is a plain dict that `torch.load(..., weights_only=True)` reads:

    {"format": "yoloq-quantized", "version": 1, "yaml": model dict, "names": [...],
     "img_size": int, "profile": "trt" | "ort", "quant_config": QuantConfig dict
     (ignores resolved to exact module paths), "disabled": [quantizer paths],
     "residual_adds": "trt" | "ort" | None (the profile's form of residual adds; true in
     older files means "trt"), "ties": {follower quantizer path: leader path},
     "state_dict": {... every amax included}, ...extra fields}

`load_quantized` rebuilds the same fused, quantized model from it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn

from yoloq.errors import YoloqError
from yoloq.graph import (
    ORT_PASSES,
    PASSES,
    apply_ties,
    find_scale_groups,
    quantizer_ties,
    tie_quantizers,
    tied_groups,
)
from yoloq.models import common
from yoloq.models.native import atomic_torch_save, read_native
from yoloq.models.registry import load_model
from yoloq.models.yolo import Model
from yoloq.quant import (
    QuantConfig,
    QuantMode,
    QuantModule,
    QuantRule,
    QuantSummary,
    TensorQuantizer,
    iter_quantizers,
    profile_config,
    quantize,
)

QUANTIZED_FORMAT = "yoloq-quantized"
FORMAT_VERSION = 1


def head_ignores(model: Model) -> list[str]:
    """Regexes that keep the detection head float: its output convolutions feed the box
    decode directly, where INT8 error costs the most mAP for the least speed."""
    return [rf"model\.{model.head.i}\."]


def head_output_rules(model: Model, config: QuantConfig) -> list[QuantRule]:
    """Where the detection head is quantized at its outputs (the ort profile): its
    convolutions' raw outputs are read by the decode's sigmoid, so their quantizers
    calibrate in sigmoid space. In the value's own space the far-negative objectness
    logits set the range, and the logits that matter lose their resolution (demo-v5,
    ort profile: an amax of 57 in place of 5.9 on the last level, 19 points of mAP)."""
    if config.output_spec is None:
        return []
    spec = replace(config.output_spec, error_space="sigmoid")
    return [QuantRule(rf"model\.{model.head.i}\.", output_spec=spec)]


class QuantResidualAdd(common.Add, QuantModule):
    """YOLOv5's residual `identity + branch` with Q/DQ on the identity input only.

    TensorRT fuses the branch's last Conv (and its activation) with the Add when the
    other input arrives quantized: the Conv then reads the identity in int8 and
    writes the sum directly. A Q/DQ on the branch would end that fusion.
    """

    @classmethod
    def from_float(cls, module, path, input_spec, weight_spec, output_spec=None):
        module.__class__ = cls
        name = f"{path}.input0_quantizer" if path else "input0_quantizer"
        module.input0_quantizer = TensorQuantizer(input_spec, name)
        return module

    def forward(self, identity: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        return self.input0_quantizer(identity) + branch


class QuantResidualSum(common.Add, QuantModule):
    """YOLOv5's residual `identity + branch` with the sum quantized, for the ort profile:
    both inputs arrive quantized (outputs of activations), so ONNX Runtime runs the pair
    as one QLinearAdd, and the Concat after it stays in int8."""

    @classmethod
    def from_float(cls, module, path, input_spec, weight_spec, output_spec=None):
        module.__class__ = cls
        name = f"{path}.output_quantizer" if path else "output_quantizer"
        module.output_quantizer = TensorQuantizer(output_spec or input_spec, name)
        return module

    def forward(self, identity: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        return self.output_quantizer(identity + branch)


# How each profile quantizes residual adds: TensorRT's rules put Q/DQ on the identity
# input; ONNX Runtime's QLinear kernels want the sum quantized.
_RESIDUAL_ADDS = {"trt": {common.Add: QuantResidualAdd}, "ort": {common.Add: QuantResidualSum}}


def quantize_yolo(
    model: Model,
    profile: str = "trt",
    weight_bits: int = 8,
    ignore: list[str] | tuple[str, ...] = (),
    keep_head_float: bool = True,
    rules: bool = True,
) -> tuple[Model, QuantSummary, QuantConfig]:
    """Quantize a fused YOLO model in place for a deployment profile.

    rules: apply the profile's placement rules. For trt, TensorRT's: Q/DQ on the
        identity input of residual adds, and one scale for every group of
        quantizers that TensorRT must fuse (Concat, MaxPool, shared tensors; see
        `yoloq.graph`), tied before calibration. For ort: the sum of each residual
        add quantized, so that ONNX Runtime runs it as a QLinearAdd, and one
        quantizer for a tensor that several read and through MaxPool, nearest
        resampling and reshapes (`yoloq.graph.ORT_PASSES`), so that it leaves no
        DequantizeLinear / QuantizeLinear pair around them.

    Returns the model, the summary, and the config with its ignores resolved to
    exact module paths (what `save_quantized` records).
    """
    ignores = [*(head_ignores(model) if keep_head_float else []), *ignore]
    config = profile_config(profile, weight_bits, ignore=ignores)
    if not keep_head_float:
        config = replace(config, rules=(*config.rules, *head_output_rules(model, config)))
    trt_rules = rules and profile == "trt"
    residual_adds = _RESIDUAL_ADDS[profile] if rules else None
    model, summary = quantize(model, config, residual_adds)
    if rules:
        passes = PASSES if trt_rules else ORT_PASSES
        tie_quantizers(model, find_scale_groups(model, trace_input(model), passes))
    return model, summary, config.resolved(summary.ignored_paths)


def trace_input(model: Model) -> torch.Tensor:
    """A small input for recording the dataflow: twice the largest stride, at least 64 px."""
    size = max(64, 2 * int(torch.as_tensor(model.stride).max()))
    device = next(model.parameters()).device
    return torch.zeros(1, model.yaml.get("ch", 3), size, size, device=device)


def save_quantized(model: Model, path: str | Path, profile: str, config: QuantConfig,
                   img_size: int, **extra) -> Path:
    """Write the quantized checkpoint atomically (see the module docstring)."""
    disabled = [p for p, q in iter_quantizers(model) if q.mode == QuantMode.DISABLED]
    payload = {
        "format": QUANTIZED_FORMAT, "version": FORMAT_VERSION, "yaml": model.yaml,
        "names": list(model.names), "img_size": int(img_size), "profile": profile,
        "quant_config": config.to_dict(), "disabled": disabled,
        "residual_adds": residual_add_form(model),
        "ties": quantizer_ties(model),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **extra,
    }
    return atomic_torch_save(payload, path)


def residual_add_form(model: nn.Module) -> str | None:
    """Which profile's quantized residual adds `model` holds ("trt", "ort"), or None."""
    for form, mapping in _RESIDUAL_ADDS.items():
        if any(isinstance(m, tuple(mapping.values())) for m in model.modules()):
            return form
    return None


def is_quantized_checkpoint(path: str | Path) -> bool:
    payload = read_native(path) if Path(path).is_file() else None
    return payload is not None and payload.get("format") == QUANTIZED_FORMAT


def load_quantized(path: str | Path, payload: dict | None = None) -> nn.Module:
    """The fused, quantized model of a `save_quantized` checkpoint, in eval mode, with
    `names`, `img_size` and `profile` set."""
    payload = payload or read_native(path)
    if payload is None or payload.get("format") != QUANTIZED_FORMAT:
        raise YoloqError(f"{path}: not a yoloq quantized checkpoint (ptq.pt / qat.pt)")
    if payload.get("version", 0) > FORMAT_VERSION:
        raise YoloqError(f"{path}: written by a newer yoloq (format {payload['version']})")
    model = Model(payload["yaml"]).fuse()
    form = payload.get("residual_adds")
    quantize(model, QuantConfig.from_dict(payload["quant_config"]),
             _RESIDUAL_ADDS["trt" if form is True else form] if form else None)
    apply_ties(model, payload.get("ties", {}))  # before loading: the state has every path
    model.load_state_dict(payload["state_dict"])
    quantizers = dict(iter_quantizers(model))
    for name in payload.get("disabled", []):
        quantizers[name].mode = QuantMode.DISABLED
    model.names = list(payload["names"])
    model.img_size = int(payload["img_size"])
    model.profile = payload["profile"]
    return model.float().eval()


def placement_groups(weights: str | Path, ignore: list[str] | tuple[str, ...] = ()):
    """The groups of quantizers tied for TensorRT in a model (list of `ScaleGroup`).

    weights: a yoloq quantized checkpoint (ptq.pt, qat.pt: its recorded ties; `ignore`
    does not apply), or anything `load_model` reads (a yoloq float checkpoint, an
    official YOLOv5 / YOLOv7 .pt, a YAML config, a shipped name, 'demo'): quantized here
    for the trt profile with the rules, as `yoloq ptq` would. For any other module:
    `yoloq.graph.find_scale_groups(model, example)`.
    """
    if Path(weights).suffix in (".pt", ".pth") and is_quantized_checkpoint(weights):
        return tied_groups(load_quantized(weights))
    model = load_model(weights).fuse().float().eval()
    quantize_yolo(model, "trt", ignore=ignore, rules=True)
    return tied_groups(model)
