"""Tiny labelled datasets for the evaluation tests, written into tmp_path."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

NAMES = ["circle", "square", "triangle"]


def random_labels(rng, count: int, nc: int) -> np.ndarray:
    """[count, 5] YOLO labels (cls, xywh normalised) fully inside the image."""
    wh = rng.uniform(0.05, 0.5, (count, 2))
    xy = rng.uniform(wh / 2, 1 - wh / 2)
    return np.column_stack([rng.integers(0, nc, count), xy, wh])


@pytest.fixture
def labelled_dataset(tmp_path):
    """Six images of several aspect ratios with 0-4 random boxes each; the data YAML."""
    rng = np.random.default_rng(7)
    sizes = [(64, 48), (48, 64), (80, 40), (50, 50), (33, 70), (70, 36)]
    for folder in ("images/val", "labels/val"):
        (tmp_path / folder).mkdir(parents=True)
    for i, (width, height) in enumerate(sizes):
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "images" / "val" / f"{i:06d}.png")
        labels = random_labels(rng, i % 5, len(NAMES))
        lines = "".join(f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in labels)
        (tmp_path / "labels" / "val" / f"{i:06d}.txt").write_text(lines)
    data = tmp_path / "data.yaml"
    data.write_text(f"val: images/val\nnames: {NAMES}\n")
    return data
