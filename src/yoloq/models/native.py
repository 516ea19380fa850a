"""yoloq's own float checkpoint: a plain dict that `torch.load(weights_only=True)` reads.

    {"format": "yoloq-float", "version": 1, "yaml": model dict, "names": [...],
     "img_size": int, "state_dict": {...}, ...extra fields}

Unlike the official checkpoints it pickles no classes, so it loads safely anywhere.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from yoloq.errors import YoloqError
from yoloq.models.yolo import Model

FLOAT_FORMAT = "yoloq-float"
FORMAT_VERSION = 1


def save_float_checkpoint(
    model, path: str | Path, img_size: int, half: bool = True, **extra
) -> Path:
    """Write `model` (a yoloq `Model`) with its config, names and input size, atomically."""
    state = {
        key: value.half() if half and value.is_floating_point() else value
        for key, value in model.state_dict().items()
    }
    payload = {
        "format": FLOAT_FORMAT,
        "version": FORMAT_VERSION,
        "yaml": model.yaml,
        "names": list(model.names),
        "img_size": int(img_size),
        "state_dict": state,
        **extra,
    }
    return atomic_torch_save(payload, path)


def atomic_torch_save(payload, path: str | Path) -> Path:
    """`torch.save` to a temporary file beside `path`, then rename: never a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def read_native(path: str | Path) -> dict | None:
    """The payload of a yoloq checkpoint, or None if `path` is not one (e.g. official)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # an official pickle, or not a checkpoint at all: the caller decides
        return None
    if isinstance(payload, dict) and str(payload.get("format", "")).startswith("yoloq-"):
        return payload
    return None


def load_float_checkpoint(path: str | Path, payload: dict | None = None):
    """The float32 `Model` in eval mode, with `names` and `img_size` set."""
    payload = payload or read_native(path)
    if payload is None or payload.get("format") != FLOAT_FORMAT:
        raise YoloqError(f"{path}: not a yoloq float checkpoint")
    model = Model(payload["yaml"])
    model.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    )
    model.names = list(payload["names"])
    model.img_size = int(payload["img_size"])
    return model.float().eval()
