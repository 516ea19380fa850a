"""A tiny YOLO-format dataset written into tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

NAMES = ["circle", "square", "triangle"]


def write_dataset(root: Path, images: dict, split: str = "val", names=NAMES) -> Path:
    """images: {stem: (width, height, label text or None)}; returns the data YAML."""
    for stem, (width, height, labels) in images.items():
        image_dir, label_dir = root / "images" / split, root / "labels" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        pixels = np.full((height, width, 3), 40, np.uint8)
        Image.fromarray(pixels).save(image_dir / f"{stem}.png")
        if labels is not None:
            (label_dir / f"{stem}.txt").write_text(labels)
    data = root / "data.yaml"
    data.write_text(f"path: .\n{split}: images/{split}\nnames: {list(names)}\n")
    return data


@pytest.fixture
def make_dataset():
    """The dataset writer: make_dataset(root, {stem: (width, height, labels)})."""
    return write_dataset


@pytest.fixture
def dataset(tmp_path):
    """Three good images of different aspect ratios, one without a label file."""
    return write_dataset(
        tmp_path,
        {
            "wide": (64, 32, "0 0.5 0.5 0.5 0.5\n1 0.25 0.25 0.2 0.3\n"),
            "tall": (30, 60, "2 0.5 0.4 0.6 0.2\n"),
            "square": (40, 40, None),
        },
    )
