"""`evaluate(predict, loader)`: COCO mAP of any backend that maps images to raw predictions."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from yoloq.console import progress as progress_bar
from yoloq.errors import YoloqError
from yoloq.evaluate.bootstrap import Matches
from yoloq.evaluate.boxes import to_original
from yoloq.evaluate.coco import CocoEvaluator
from yoloq.evaluate.nms import non_max_suppression

Predict = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class EvalResult:
    """mAP and timings of one evaluation; fractions (0..1), None in JSON where undefined."""

    map50_95: float
    map50: float
    per_class_ap: dict[str, float]  # AP@[.5:.95] per class name
    per_class_ap50: dict[str, float]
    per_class_instances: dict[str, int]
    images: int
    detections: int
    model_seconds: float  # inside `predict` only
    eval_seconds: float  # NMS, rescaling and COCOeval
    data_seconds: float  # waiting for the loader
    stats: list[float] = field(default_factory=list)  # COCOeval's 12 numbers
    settings: dict = field(default_factory=dict)
    # COCOeval's per-image matches (yoloq.evaluate.bootstrap), in memory only: what paired
    # intervals against another evaluation of the same images are computed from.
    matches: Matches | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        """A JSON-ready dict (nan -> None), without the matches."""
        return _nan_to_none({f.name: getattr(self, f.name) for f in fields(self)
                             if f.name != "matches"})

    @classmethod
    def from_dict(cls, data: dict) -> EvalResult:
        return cls(**_none_to_nan(data))

    def save(self, path: str | Path) -> None:
        """Write the result as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def evaluate(
    predict: Predict,
    loader: Iterable,
    *,
    names: Sequence[str] | None = None,
    conf_thres: float = 0.001,
    iou_thres: float = 0.65,
    max_det: int = 300,
    multi_label: bool = True,
    device: str | torch.device | None = None,
    ground_truth: str | Path | None = None,
    category_ids: Sequence[int] | None = None,
    progress: bool = True,
) -> EvalResult:
    """COCO mAP@.5:.95 and mAP@.5 of `predict` over the batches of `loader`.

    `predict(images)` takes the float [B, 3, H, W] batch (moved to `device` if given)
    and returns raw predictions [B, anchors, 5 + nc] (xywh in input pixels, sigmoid
    scores), as a tensor or numpy array, or a tuple whose first item is one. Works for
    torch models, ONNX Runtime and TensorRT alike. `ground_truth` optionally names a
    COCO instances JSON; by default the YOLO labels of the batches are the truth.

    Example:
        model.eval()
        with torch.inference_mode():
            result = evaluate(lambda x: model(x)[0], create_val_loader(images))
    """
    names = tuple(names if names is not None else getattr(loader.dataset, "names", ()))
    if not names:
        raise YoloqError("evaluate needs the class names (pass names=...)")
    evaluator = CocoEvaluator(names, ground_truth, category_ids)
    timers = {"model": 0.0, "eval": 0.0, "data": 0.0}
    start = time.perf_counter()
    for batch in progress_bar(loader, "evaluating", enabled=progress):
        now = time.perf_counter()
        timers["data"] += now - start
        raw = _run_model(predict, batch.images, device, len(names))
        start = time.perf_counter()
        timers["model"] += start - now
        detections = non_max_suppression(raw, conf_thres, iou_thres, max_det, multi_label)
        evaluator.update(_to_original(detections, batch.metas), batch.metas)
        now = time.perf_counter()
        timers["eval"] += now - start
        start = now
    metrics = evaluator.summarize()
    timers["eval"] += time.perf_counter() - start
    return EvalResult(
        map50_95=metrics.map50_95,
        map50=metrics.map50,
        per_class_ap=dict(zip(names, metrics.per_class_ap, strict=True)),
        per_class_ap50=dict(zip(names, metrics.per_class_ap50, strict=True)),
        per_class_instances=dict(zip(names, metrics.per_class_instances, strict=True)),
        images=metrics.images,
        detections=metrics.detections,
        model_seconds=timers["model"],
        eval_seconds=timers["eval"],
        data_seconds=timers["data"],
        stats=list(metrics.stats),
        settings={"conf_thres": conf_thres, "iou_thres": iou_thres, "max_det": max_det},
        matches=metrics.matches,
    )


def _run_model(predict: Predict, images: torch.Tensor, device, nc: int) -> torch.Tensor:
    if device is not None:
        images = images.to(device, non_blocking=True)
    raw = predict(images)
    if isinstance(raw, (tuple, list)):
        raw = raw[0]
    raw = torch.from_numpy(np.asarray(raw)) if not isinstance(raw, torch.Tensor) else raw
    if raw.is_cuda:
        torch.cuda.synchronize(raw.device)  # so model time is not billed to NMS
    if raw.ndim != 3 or raw.shape[0] != len(images) or raw.shape[-1] != 5 + nc:
        raise YoloqError(
            f"predictions of shape {tuple(raw.shape)} do not match a batch of {len(images)} "
            f"images and {nc} classes (expected [B, anchors, {5 + nc}])"
        )
    return raw


def _to_original(detections: list[torch.Tensor], metas) -> list[torch.Tensor]:
    """Detections in input pixels -> original image pixels (boxes only)."""
    return [
        torch.cat([to_original(dets[:, :4], meta), dets[:, 4:]], dim=1)
        for dets, meta in zip(detections, metas, strict=True)
    ]


def _nan_to_none(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def _none_to_nan(value):
    if value is None:
        return math.nan
    if isinstance(value, dict):
        return {k: _none_to_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_none_to_nan(v) for v in value]
    return value
