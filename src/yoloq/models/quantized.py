"""Quantizing YOLO models, and the quantized checkpoint (`ptq.pt`, `qat.pt`).

The checkpoint is a plain dict that `torch.load(..., weights_only=True)` reads:

    {"format": "yoloq-quantized", "version": 1, "yaml": model dict, "names": [...],
     "img_size": int, "profile": "trt" | "ort", "quant_config": QuantConfig dict
     (ignores resolved to exact module paths), "disabled": [quantizer paths],
     "state_dict": {... every amax included}, ...extra fields}

`load_quantized` rebuilds the same fused, quantized model from it.
"""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from yoloq.errors import YoloqError
from yoloq.models.native import atomic_torch_save, read_native
from yoloq.models.yolo import Model
from yoloq.quant import (
    QuantConfig,
    QuantMode,
    QuantSummary,
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


def quantize_yolo(
    model: Model,
    profile: str = "trt",
    weight_bits: int = 8,
    ignore: list[str] | tuple[str, ...] = (),
    keep_head_float: bool = True,
) -> tuple[Model, QuantSummary, QuantConfig]:
    """Quantize a fused YOLO model in place for a deployment profile.

    Returns the model, the summary, and the config with its ignores resolved to
    exact module paths (what `save_quantized` records).
    """
    ignores = [*(head_ignores(model) if keep_head_float else []), *ignore]
    config = profile_config(profile, weight_bits, ignore=ignores)
    model, summary = quantize(model, config)
    return model, summary, config.resolved(summary.ignored_paths)


def save_quantized(model: Model, path: str | Path, profile: str, config: QuantConfig,
                   img_size: int, **extra) -> Path:
    """Write the quantized checkpoint atomically (see the module docstring)."""
    disabled = [p for p, q in iter_quantizers(model) if q.mode == QuantMode.DISABLED]
    payload = {
        "format": QUANTIZED_FORMAT, "version": FORMAT_VERSION, "yaml": model.yaml,
        "names": list(model.names), "img_size": int(img_size), "profile": profile,
        "quant_config": config.to_dict(), "disabled": disabled,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **extra,
    }
    return atomic_torch_save(payload, path)


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
    quantize(model, QuantConfig.from_dict(payload["quant_config"]))
    model.load_state_dict(payload["state_dict"])
    quantizers = dict(iter_quantizers(model))
    for name in payload.get("disabled", []):
        quantizers[name].mode = QuantMode.DISABLED
    model.names = list(payload["names"])
    model.img_size = int(payload["img_size"])
    model.profile = payload["profile"]
    return model.float().eval()
