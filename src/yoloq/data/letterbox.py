"""Letterbox: resize keeping the aspect ratio, then pad to a stride-aligned shape.

The geometry follows YOLOv7's test: the long side is scaled to `img_size`, and
rectangular validation batches pad each batch of images (sorted by aspect ratio)
to the smallest stride multiple that holds them plus `pad` strides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from yoloq.errors import YoloqError

PAD_COLOR = (114, 114, 114)


@dataclass(frozen=True)
class ImageMeta:
    """What is needed to map a letterboxed image back to the original.

    original = (letterboxed - pad) / ratio, per axis. `labels` are the original YOLO
    labels [n, 5] (cls, xywh normalised), which the evaluator turns into ground truth.
    """

    path: Path
    original_shape: tuple[int, int]  # (height, width)
    ratio: tuple[float, float]  # (x, y): resized size / original size
    pad: tuple[int, int]  # (left, top) in pixels of the letterboxed image
    labels: np.ndarray


def align_to_stride(img_size: int, stride: int) -> int:
    """`img_size` rounded up to a multiple of `stride` (a model's input must be one)."""
    if img_size <= 0 or stride <= 0:
        raise YoloqError(f"image size {img_size} and stride {stride} must be positive")
    return int(math.ceil(img_size / stride) * stride)


def rect_batch_shapes(
    sizes_wh: np.ndarray, batch_size: int, img_size: int, stride: int, pad: float = 0.5
) -> np.ndarray:
    """Letterbox shape (height, width) per batch for images already sorted by h/w.

    Each batch gets the shape of its most extreme aspect ratio with the long side
    `img_size`, rounded up to a stride multiple after adding `pad` strides (YOLOv7's rule).
    """
    aspect = sizes_wh[:, 1] / sizes_wh[:, 0]  # h / w
    batch_index = np.arange(len(aspect)) // batch_size
    shapes = np.ones((batch_index[-1] + 1, 2)) if len(aspect) else np.ones((0, 2))
    for b in range(len(shapes)):
        low, high = aspect[batch_index == b].min(), aspect[batch_index == b].max()
        if high < 1:  # all wide: height shrinks
            shapes[b] = [high, 1]
        elif low > 1:  # all tall: width shrinks
            shapes[b] = [1, 1 / low]
    return (np.ceil(shapes * img_size / stride + pad).astype(int) * stride).astype(int)


def load_rgb(path: Path) -> Image.Image:
    """Decode an image as RGB, EXIF orientation applied (as the labels assume)."""
    try:
        with Image.open(path) as image:
            return ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, ValueError) as error:
        raise YoloqError(f"{path}: unreadable image ({error})") from None


def letterbox(
    image: Image.Image, shape: tuple[int, int], scale: float, offset: tuple[int, int] | None = None
) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """Resize `image` by `scale` and paste it on a gray canvas of `shape` (h, w).

    The resized image is centred unless `offset` (left, top) is given; an offset may be
    negative, which crops (used by scale augmentation). Returns (HxWx3 uint8 array,
    ratio (x, y) actually applied after rounding, pad (left, top)).
    """
    width, height = image.size
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    if (new_w, new_h) != (width, height):
        # Pillow's bilinear filter antialiases when shrinking, like cv2.INTER_AREA.
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    if offset is None:
        # round(d - 0.1): the odd pixel goes to the right/bottom, as in YOLOv7.
        offset = (round((shape[1] - new_w) / 2 - 0.1), round((shape[0] - new_h) / 2 - 0.1))
    canvas = Image.new("RGB", (shape[1], shape[0]), PAD_COLOR)
    canvas.paste(image, offset)
    return np.asarray(canvas), (new_w / width, new_h / height), offset


def fit_scale(width: int, height: int, img_size: int) -> float:
    """The scale that brings the long side of a (width, height) image to `img_size`."""
    return img_size / max(width, height)
