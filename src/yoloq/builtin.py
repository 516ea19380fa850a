"""The built-in benchmark: the demo model that ships with yoloq, and the synthetic
dataset it was trained on (generated once, on first use, into a cache folder).

`--weights demo` and `--data demo` name them wherever a command takes weights or data.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

DEMO = "demo"
ASSETS = resources.files("yoloq") / "assets"
# The parameters the demo model was trained with: the val split is the benchmark.
DEMO_DATA = {"train_images": 4000, "val_images": 500, "size": 320, "seed": 0}


def cache_dir() -> Path:
    """Where yoloq keeps generated data: $YOLOQ_CACHE, else ~/.cache/yoloq."""
    return Path(os.environ.get("YOLOQ_CACHE") or Path.home() / ".cache" / "yoloq")


def demo_model():
    """The demo detector (YOLOv7-tiny at half width, 8 classes, 320 px), float, eval mode."""
    from yoloq.models.native import load_float_checkpoint

    with resources.as_file(ASSETS / "demo_model.pt") as path:
        return load_float_checkpoint(path)


def demo_record() -> dict:
    """How the demo model was made: command, device, time, val mAP."""
    return json.loads((ASSETS / "demo_model.json").read_text())


def demo_data(root: str | Path | None = None, progress: bool = True) -> Path:
    """The data YAML of the synthetic benchmark under `root` (default: the cache),
    generating it the first time (about a minute on 2 cores)."""
    from yoloq.data.synthetic import ensure_dataset

    root = Path(root) if root is not None else cache_dir() / "synthetic"
    return ensure_dataset(root, progress=progress, **DEMO_DATA)
