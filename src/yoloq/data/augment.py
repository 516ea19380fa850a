"""Light augmentation for QAT and fine-tuning: random scale, HSV jitter, left-right flip.

No mosaic or mixup: QAT starts from a trained model and needs only mild variety.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from yoloq.errors import YoloqError

MIN_BOX_PIXELS = 2.0  # boxes cropped thinner than this are dropped


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths; 0 turns one off. Gains as in YOLOv7's hyp.scratch."""

    scale: float = 0.5  # resize factor drawn from [1 - scale, 1 + scale]
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    flip_lr: float = 0.5  # probability

    def __post_init__(self):
        if not 0 <= self.scale < 1:
            raise YoloqError(f"augment scale must be in [0, 1), not {self.scale}")
        if not 0 <= self.flip_lr <= 1:
            raise YoloqError(f"flip probability must be in [0, 1], not {self.flip_lr}")
        if min(self.hsv_h, self.hsv_s, self.hsv_v) < 0:
            raise YoloqError("HSV gains must be >= 0")


def random_offset(new_wh: tuple[int, int], canvas_wh: tuple[int, int], rng) -> tuple[int, int]:
    """Paste position of a resized image: centred if it fits, a random crop if not."""
    offset = []
    for new, canvas in zip(new_wh, canvas_wh, strict=True):
        slack = canvas - new
        offset.append(round(slack / 2) if slack >= 0 else int(rng.integers(slack, 1)))
    return offset[0], offset[1]


def boxes_after_letterbox(labels: np.ndarray, size_wh, ratio, pad, canvas_wh) -> np.ndarray:
    """Map normalised labels of the original image to normalised labels of the canvas,
    clipping to the canvas and dropping boxes that are cropped away."""
    if not len(labels):
        return labels
    width, height = size_wh[0] * ratio[0], size_wh[1] * ratio[1]
    x, y, w, h = (labels[:, i] for i in range(1, 5))
    x1 = np.clip((x - w / 2) * width + pad[0], 0, canvas_wh[0])
    x2 = np.clip((x + w / 2) * width + pad[0], 0, canvas_wh[0])
    y1 = np.clip((y - h / 2) * height + pad[1], 0, canvas_wh[1])
    y2 = np.clip((y + h / 2) * height + pad[1], 0, canvas_wh[1])
    keep = (x2 - x1 >= MIN_BOX_PIXELS) & (y2 - y1 >= MIN_BOX_PIXELS)
    out = np.stack(
        [
            labels[:, 0],
            (x1 + x2) / 2 / canvas_wh[0],
            (y1 + y2) / 2 / canvas_wh[1],
            (x2 - x1) / canvas_wh[0],
            (y2 - y1) / canvas_wh[1],
        ],
        axis=1,
    )
    return out[keep].astype(np.float32)


def augment_hsv(image: np.ndarray, config: AugmentConfig, rng) -> np.ndarray:
    """Random gains on hue, saturation and value through lookup tables (HxWx3 RGB uint8)."""
    gains = rng.uniform(-1, 1, 3) * [config.hsv_h, config.hsv_s, config.hsv_v] + 1
    hsv = np.asarray(Image.fromarray(image).convert("HSV"))
    x = np.arange(256, dtype=np.float64)
    # Pillow's hue spans 0..255 for the full circle, so it wraps modulo 256.
    tables = [(x * gains[0]) % 256, np.clip(x * gains[1], 0, 255), np.clip(x * gains[2], 0, 255)]
    channels = [table.astype(np.uint8)[hsv[..., i]] for i, table in enumerate(tables)]
    return np.asarray(Image.fromarray(np.stack(channels, -1), "HSV").convert("RGB"))


def flip_lr(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror an image and its normalised labels left-right."""
    labels = labels.copy()
    labels[:, 1] = 1 - labels[:, 1]
    return np.ascontiguousarray(image[:, ::-1]), labels
