"""The built-in benchmark's data: the synthetic dataset the demo models were trained on,
generated once, on first use, into a cache folder. `--data demo` names it."""

from __future__ import annotations

import os
from pathlib import Path

from yoloq.data.synthetic import ensure_dataset

DEMO = "demo"
# The parameters the demo models were trained with. Their 500 val images are the `select`
# split (training chose its best epoch on them); the 2,000 report images, from seeds of
# their own, are the `val` split every number is measured on.
DEMO_DATA = {"train_images": 4000, "val_images": 500, "report_images": 2000, "size": 320,
             "seed": 0}


def cache_dir() -> Path:
    """Where yoloq keeps generated data: $YOLOQ_CACHE, else ~/.cache/yoloq."""
    return Path(os.environ.get("YOLOQ_CACHE") or Path.home() / ".cache" / "yoloq")


def demo_data(root: str | Path | None = None, progress: bool = True) -> Path:
    """The data YAML of the synthetic benchmark under `root` (default: the cache),
    generating it the first time (about two minutes on 2 cores)."""
    root = Path(root) if root is not None else cache_dir() / "synthetic"
    return ensure_dataset(root, progress=progress, **DEMO_DATA)
