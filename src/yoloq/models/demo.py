"""The demo model that ships with yoloq (YOLOv7-tiny at half width, trained on the
built-in benchmark's synthetic data) and the record of how it was made.
`--weights demo` names it."""

from __future__ import annotations

import json
from importlib import resources

from yoloq.models.native import load_float_checkpoint

DEMO = "demo"
ASSETS = resources.files("yoloq") / "assets"


def demo_model():
    """The demo detector (YOLOv7-tiny at half width, 8 classes, 320 px), float, eval mode."""
    with resources.as_file(ASSETS / "demo_model.pt") as path:
        return load_float_checkpoint(path)


def demo_record() -> dict:
    """How the demo model was made: command, device, time, val mAP."""
    return json.loads((ASSETS / "demo_model.json").read_text())
