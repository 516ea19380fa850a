"""Save and restore the quantizers of a model: amax, mode and spec, by path."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from yoloq.quant.quantizer import QuantMode, iter_quantizers
from yoloq.quant.spec import QuantSpec


def quant_state_dict(model: nn.Module) -> dict[str, dict[str, Any]]:
    """{quantizer path: {"amax", "amin", "mode", "spec"}}: plain data that
    `torch.load(weights_only=True)` reads back."""
    return {
        path: {
            "amax": None if q.amax is None else q.amax.detach().cpu().clone(),
            "amin": None if q.amin is None else q.amin.detach().cpu().clone(),
            "mode": q.mode.value,
            "spec": q.spec.to_dict(),
        }
        for path, q in iter_quantizers(model)
    }


def load_quant_state_dict(model: nn.Module, state: dict[str, dict[str, Any]]) -> None:
    """Restore what `quant_state_dict` saved into a model quantized the same way."""
    present = dict(iter_quantizers(model))
    missing, unexpected = set(present) - set(state), set(state) - set(present)
    if missing or unexpected:
        raise ValueError(f"quantizer state does not fit the model: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    for path, quantizer in present.items():
        entry = state[path]
        spec = QuantSpec.from_dict(entry["spec"])
        if spec != quantizer.spec:
            raise ValueError(f"{path}: saved spec {spec} differs from the model's {quantizer.spec}")
        if entry["amax"] is not None:
            quantizer.set_amax(torch.as_tensor(entry["amax"]), entry.get("amin"))
        quantizer.mode = QuantMode(entry["mode"])
