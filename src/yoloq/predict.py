"""Detections of any backend drawn on images, and listed in detections.json.

A predictor is what `yoloq.runtime.predictor.load_predictor` returns: callable on a
float [B, 3, H, W] batch in 0..1, returning raw predictions [B, anchors, 5 + nc]
(xywh in input pixels, sigmoid scores), with `names`, `img_size`, `stride` and
`description`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from yoloq.console import progress
from yoloq.data.dataset import list_images
from yoloq.data.letterbox import ImageMeta, align_to_stride, fit_scale, letterbox, load_rgb
from yoloq.errors import YoloqError
from yoloq.evaluate import non_max_suppression, to_original
from yoloq.files import atomic_path, write_text_atomic

DETECTIONS_JSON = "detections.json"
# A fixed palette, so that a class has the same colour in every image and every run.
PALETTE = (
    "#FF3838", "#2C99A8", "#FF9D97", "#00C2FF", "#FF701F", "#344593", "#FFB21D", "#6473FF",
    "#CFD231", "#0018EC", "#48F90A", "#8438FF", "#92CC17", "#520085", "#3DDB86", "#CB38FF",
    "#1A9334", "#FF95C8", "#00D4BB", "#FF37C7",
)  # fmt: skip


@dataclass(frozen=True)
class Detection:
    """One box in original image pixels."""

    cls: int
    name: str
    score: float
    box_xyxy: tuple[float, float, float, float]

    def to_dict(self) -> dict:
        return {"class": self.cls, "name": self.name, "score": round(self.score, 4),
                "box_xyxy": [round(v, 2) for v in self.box_xyxy]}  # fmt: skip


@dataclass(frozen=True)
class ImagePrediction:
    """The detections of one source image and where its drawing was written."""

    source: Path
    output: Path
    detections: tuple[Detection, ...]

    def to_dict(self) -> dict:
        return {"source": str(self.source), "output": self.output.name,
                "detections": [d.to_dict() for d in self.detections]}  # fmt: skip


def class_color(cls: int) -> str:
    """The drawing colour of class `cls` (the same in every run)."""
    return PALETTE[cls % len(PALETTE)]


def predict_images(
    predictor,
    sources: Sequence[str | Path],
    out_dir: str | Path,
    conf: float = 0.25,
    iou: float = 0.45,
    *,
    img_size: int | None = None,
    max_det: int = 300,
    device: str | torch.device | None = None,
    show_progress: bool = True,
) -> list[ImagePrediction]:
    """Detect objects in every image of `sources` and draw them into `out_dir`.

    `sources` are image files, folders (searched recursively) or list files. Each image
    is letterboxed to a square of `img_size` (default the predictor's), one at a time so
    that fixed-shape engines work; boxes are mapped back to original pixels. Writes one
    drawn image per source (same file name) and detections.json.

    Example:
        predict_images(load_predictor("best.pt"), ["images/"], "runs/predict")
    """
    images = list_images(sources)
    if not images:
        raise YoloqError(f"no images in {', '.join(map(str, sources))}")
    size = align_to_stride(img_size or predictor.img_size, int(predictor.stride))
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise YoloqError(f"--out {out_dir} is a file, not a folder")
    results, used_names = [], set()
    for path in progress(images, "predict", enabled=show_progress):
        image = load_rgb(path)
        detections = detect(predictor, image, path, size, conf, iou, max_det, device)
        out_dir.mkdir(parents=True, exist_ok=True)  # here: a bad first image makes no folder
        output = out_dir / _unique_name(path.name, used_names)
        save_image_atomic(draw_detections(image, detections), output)
        results.append(ImagePrediction(path, output, detections))
    summary = {"model": getattr(predictor, "description", ""), "img_size": size,
               "conf": conf, "iou": iou, "images": [r.to_dict() for r in results]}  # fmt: skip
    write_text_atomic(out_dir / DETECTIONS_JSON, json.dumps(summary, indent=2) + "\n")
    return results


def detect(predictor, image: Image.Image, path: Path, size: int, conf: float, iou: float,
           max_det: int = 300, device=None) -> tuple[Detection, ...]:  # fmt: skip
    """The detections of one RGB image, letterboxed to size x size, in original pixels."""
    width, height = image.size
    pixels, ratio, pad = letterbox(image, (size, size), fit_scale(width, height, size))
    meta = ImageMeta(path, (height, width), ratio, pad, np.zeros((0, 5)))
    batch = torch.from_numpy(pixels.transpose(2, 0, 1).copy()).float().div_(255).unsqueeze(0)
    with torch.inference_mode():
        raw = predictor(batch.to(device) if device else batch)
    raw = torch.as_tensor(raw[0] if isinstance(raw, (tuple, list)) else raw).float().cpu()
    found = non_max_suppression(raw, conf, iou, max_det=max_det)[0]
    boxes = to_original(found[:, :4], meta).tolist()
    names = list(predictor.names)
    return tuple(
        Detection(
            int(c), names[int(c)] if int(c) < len(names) else str(int(c)), float(s), tuple(box)
        )  # fmt: skip
        for box, s, c in zip(boxes, found[:, 4].tolist(), found[:, 5].tolist())
    )


def draw_detections(image: Image.Image, detections: Sequence[Detection]) -> Image.Image:
    """A copy of `image` with each box and its label ('name 0.87') in the class colour."""
    image = image.copy()
    draw = ImageDraw.Draw(image)
    line = max(1, round(min(image.size) / 250))  # visible on large images, thin on small
    font = ImageFont.load_default()
    for detection in detections:
        color = class_color(detection.cls)
        draw.rectangle(detection.box_xyxy, outline=color, width=line)
        text = f"{detection.name} {detection.score:.2f}"
        left, top = detection.box_xyxy[0], detection.box_xyxy[1]
        x1, y1, x2, y2 = draw.textbbox((0, 0), text, font=font)
        text_top = top - (y2 - y1) - 2 if top >= (y2 - y1) + 2 else top  # inside at the edge
        draw.rectangle((left, text_top, left + x2 - x1 + 2, text_top + y2 - y1 + 2), fill=color)
        draw.text((left + 1 - x1, text_top + 1 - y1), text, fill="white", font=font)
    return image


def save_image_atomic(image: Image.Image, path: Path) -> Path:
    """Save through a temporary file of the same suffix (PIL picks the format by it), so
    that an interrupted run never leaves a half-written drawing."""
    with atomic_path(path) as temporary:
        image.save(temporary)
    return path


def _unique_name(name: str, used: set[str]) -> str:
    """`name`, or `stem_2.ext`, ... when two sources (in different folders) share it."""
    stem, suffix = os.path.splitext(name)
    candidate, count = name, 1
    while candidate in used or candidate == DETECTIONS_JSON:
        count += 1
        candidate = f"{stem}_{count}{suffix}"
    used.add(candidate)
    return candidate
