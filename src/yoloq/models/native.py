"""yoloq's own float checkpoint: a plain dict that `torch.load(weights_only=True)` reads.

    {"format": "yoloq-float", "version": 1, "yaml": model dict, "names": [...],
     "img_size": int, "state_dict": {...}, ...extra fields}

Unlike the official checkpoints it pickles no classes, so it loads safely anywhere.
"""

from __future__ import annotations

from pathlib import Path

import torch

from yoloq.errors import YoloqError
from yoloq.files import atomic_path
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
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)
    return Path(path)


def read_native(path: str | Path) -> dict | None:
    """The payload of a yoloq checkpoint, or None if `path` is not one (e.g. official)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # an official pickle, or not a checkpoint at all: the caller decides
        return None
    if isinstance(payload, dict) and str(payload.get("format", "")).startswith("yoloq-"):
        return payload
    return None


def require_native(path: str | Path, expected_format: str, option: str = "") -> dict:
    """The payload of the yoloq checkpoint at `path` in `expected_format`; otherwise a
    YoloqError naming the file (after `option`, e.g. "--ptq") and what is wrong with it."""
    path = Path(path)
    where = f"{option} {path}".strip()
    if not path.is_file():
        raise YoloqError(f"{where}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt data
        reason = describe_unreadable(path, error)
        if reason.startswith("corrupt") and "Unsupported global" in str(error):
            reason = (f"not a {expected_format} checkpoint: it pickles Python objects, as "
                      "official YOLO checkpoints do")
        raise YoloqError(f"{where}: {reason}") from None
    found = payload.get("format") if isinstance(payload, dict) else None
    if found != expected_format:
        what = f"a {found} one" if found else f"a {type(payload).__name__} of no yoloq format"
        raise YoloqError(f"{where}: not a {expected_format} checkpoint but {what}")
    return payload


def describe_unreadable(path: Path, error: Exception) -> str:
    """Why torch cannot read `path`, in a few words: an empty file, no checkpoint at all,
    or one torn in transfer (torch's reason in one sentence: the rest is advice)."""
    with open(path, "rb") as file:
        head = file.read(2)
    if not head:
        return "empty file (0 bytes)"
    if head != b"PK" and not head.startswith(b"\x80"):  # neither a zip archive nor a pickle
        return "not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle)"
    text = str(error)
    _, marker, detail = text.partition("WeightsUnpickler error: ")  # the cause, after advice
    reason = (detail if marker else text).splitlines()[0].split(". ")[0] if text else ""
    return f"corrupt or truncated checkpoint ({reason or type(error).__name__})"


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
