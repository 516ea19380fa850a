"""The demo models that ship with yoloq, trained on the built-in benchmark's synthetic
data by `scripts/train_demo.py`, and the records of how they were made.
`--weights demo` names YOLOv7-tiny at half width (LeakyReLU); `--weights demo-v5`
names YOLOv5n v7.0 (SiLU, C3 with residual adds, SPPF)."""

from __future__ import annotations

import json
from importlib import resources

from yoloq.errors import YoloqError
from yoloq.models.native import load_float_checkpoint

DEMO = "demo"
DEMO_V5 = "demo-v5"
# Name -> the asset stem of its weights (.pt) and record (.json).
DEMO_MODELS = {DEMO: "demo_model", DEMO_V5: "demo_v5_model"}
ASSETS = resources.files("yoloq") / "assets"


def demo_model(name: str = DEMO):
    """A shipped demo detector (8 classes, 320 px), float, eval mode."""
    with resources.as_file(ASSETS / f"{_stem(name)}.pt") as path:
        return load_float_checkpoint(path)


def demo_record(name: str = DEMO) -> dict:
    """How a demo model was made: command, device, time, mAP on the select split."""
    return json.loads((ASSETS / f"{_stem(name)}.json").read_text())


def _stem(name: str) -> str:
    if name not in DEMO_MODELS:
        raise YoloqError(f"{name}: not a shipped demo model ({', '.join(DEMO_MODELS)})")
    return DEMO_MODELS[name]
