"""COCO mAP with pycocotools, on in-memory COCO structures, fed batch by batch.

Ground truth comes from the YOLO labels carried by each batch (boxes in original
pixels, area = w * h, iscrowd 0), or from a COCO `instances_*.json`; then image ids
come from file names and the model's classes map to the JSON's category ids.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from yoloq.data.letterbox import ImageMeta
from yoloq.errors import YoloqError
from yoloq.evaluate.bootstrap import Matches, matches_from_cocoeval
from yoloq.evaluate.boxes import yolo_to_coco_boxes

# COCO's 80 training classes -> the 91 category ids of instances_*.json.
COCO80_TO_COCO91 = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27,
    28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53,
    54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80,
    81, 82, 84, 85, 86, 87, 88, 89, 90,
)  # fmt: skip

STAT_NAMES = (
    "AP @[.50:.95] all",
    "AP @.50 all",
    "AP @.75 all",
    "AP @[.50:.95] small",
    "AP @[.50:.95] medium",
    "AP @[.50:.95] large",
    "AR @[.50:.95] all, 1 det",
    "AR @[.50:.95] all, 10 dets",
    "AR @[.50:.95] all, 100 dets",
    "AR @[.50:.95] small",
    "AR @[.50:.95] medium",
    "AR @[.50:.95] large",
)


@dataclass(frozen=True)
class CocoMetrics:
    """COCOeval's numbers as fractions; nan where COCO has no answer (no ground truth)."""

    stats: tuple[float, ...]  # the 12 numbers of COCOeval.summarize(), STAT_NAMES order
    per_class_ap: tuple[float, ...]  # AP@[.5:.95] per class
    per_class_ap50: tuple[float, ...]
    per_class_instances: tuple[int, ...]
    images: int
    detections: int
    matches: Matches | None = None  # per-image matches, for bootstrap intervals

    @property
    def map50_95(self) -> float:
        return self.stats[0]

    @property
    def map50(self) -> float:
        return self.stats[1]


def image_id_from_path(path: str | Path) -> int | str:
    """COCO image id of a file, as YOLOv7 takes it: the stem as int when it is a number."""
    stem = Path(path).stem
    return int(stem) if stem.isnumeric() else stem


def quiet_coco(dataset: dict) -> COCO:
    """A pycocotools COCO object built from an in-memory dict, without its printing."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class CocoEvaluator:
    """Streaming COCO evaluation: `update` per batch, `summarize` at the end.

    Example:
        evaluator = CocoEvaluator(names)
        for batch in loader:
            evaluator.update(detections_in_original_pixels, batch.metas)
        metrics = evaluator.summarize()
    """

    def __init__(
        self,
        names: Sequence[str],
        ground_truth: str | Path | None = None,
        category_ids: Sequence[int] | None = None,
    ):
        self.names = tuple(names)
        self._gt_file = Path(ground_truth) if ground_truth else None
        self._gt_json = _read_instances(self._gt_file) if self._gt_file else None
        self.category_ids = self._category_ids(category_ids)
        self._images: list[dict] = []
        self._annotations: list[dict] = []
        self._detections: list[np.ndarray] = []  # [n, 7]: image index, x, y, w, h, score, class

    def _category_ids(self, category_ids: Sequence[int] | None) -> tuple[int, ...]:
        if category_ids is not None:
            if len(category_ids) != len(self.names):
                raise YoloqError(f"{len(category_ids)} category ids for {len(self.names)} classes")
            return tuple(int(c) for c in category_ids)
        if self._gt_json is not None and len(self.names) == len(COCO80_TO_COCO91):
            return COCO80_TO_COCO91
        return tuple(range(len(self.names)))

    def update(self, detections: Sequence[torch.Tensor], metas: Sequence[ImageMeta]) -> None:
        """Add one batch: per image, detections [n, 6] (x1, y1, x2, y2, conf, class) in
        original pixels, and the image's metadata (with its YOLO labels)."""
        for dets, meta in zip(detections, metas, strict=True):
            index = len(self._images)
            self._images.append(self._image_entry(index, meta))
            if self._gt_json is None:
                self._add_ground_truth(index, meta)
            dets = dets.detach().to("cpu", torch.float64).numpy().reshape(-1, 6)
            xywh = np.concatenate([dets[:, :2], dets[:, 2:4] - dets[:, :2]], axis=1)
            rows = np.column_stack([np.full(len(dets), index), xywh, dets[:, 4:6]])
            self._detections.append(rows)

    def _image_entry(self, index: int, meta: ImageMeta) -> dict:
        height, width = meta.original_shape
        image_id = index if self._gt_json is None else image_id_from_path(meta.path)
        return {"id": image_id, "file_name": meta.path.name, "width": width, "height": height}

    def _add_ground_truth(self, index: int, meta: ImageMeta) -> None:
        height, width = meta.original_shape
        boxes = yolo_to_coco_boxes(meta.labels, width, height)
        for cls, box in zip(meta.labels[:, 0].astype(int), boxes, strict=True):
            self._annotations.append(
                {
                    "id": len(self._annotations) + 1,
                    "image_id": index,
                    "category_id": self.category_ids[cls],
                    "bbox": [float(v) for v in box],
                    "area": float(box[2] * box[3]),
                    "iscrowd": 0,
                }
            )

    def summarize(self) -> CocoMetrics:
        """Run COCOeval on everything added so far."""
        gt = self._ground_truth()
        image_ids = [image["id"] for image in self._images]
        detections = self._detection_coco(gt, image_ids)
        evaluator = COCOeval(gt, detections, "bbox")
        evaluator.params.imgIds = image_ids
        evaluator.params.catIds = list(self.category_ids)
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        stats = tuple(_fraction(v) for v in evaluator.stats)
        precision = evaluator.eval["precision"]  # [iou, recall, class, area, max dets]
        return CocoMetrics(
            stats=stats,
            per_class_ap=tuple(
                _mean_valid(precision[:, :, k, 0, -1]) for k in range(len(self.names))
            ),
            per_class_ap50=tuple(
                _mean_valid(precision[0, :, k, 0, -1]) for k in range(len(self.names))
            ),
            per_class_instances=tuple(
                len(gt.getAnnIds(imgIds=image_ids, catIds=[c], iscrowd=False))
                for c in self.category_ids
            ),
            images=len(image_ids),
            detections=len(detections.dataset["annotations"]),
            matches=matches_from_cocoeval(evaluator),
        )

    def _ground_truth(self) -> COCO:
        if self._gt_json is None:
            categories = [
                {"id": c, "name": n} for c, n in zip(self.category_ids, self.names, strict=True)
            ]
            dataset = {"images": self._images, "annotations": self._annotations}
            return quiet_coco({**dataset, "categories": categories})
        gt = quiet_coco(self._gt_json)
        missing = [image["id"] for image in self._images if image["id"] not in gt.imgs]
        if missing:
            raise YoloqError(
                f"{self._gt_file}: {len(missing)} image(s) not in the ground truth, "
                f"e.g. id {missing[0]!r} (image ids come from file names)"
            )
        return gt

    def _detection_coco(self, gt: COCO, image_ids: list) -> COCO:
        """The detections as a COCO object, built as COCO.loadRes builds one (area = w*h)."""
        rows = np.concatenate(self._detections) if self._detections else np.zeros((0, 7))
        annotations = [
            {
                "id": i + 1,
                "image_id": image_ids[int(row[0])],
                "category_id": self.category_ids[int(row[6])],
                "bbox": row[1:5].tolist(),
                "area": float(row[3] * row[4]),
                "score": float(row[5]),
                "iscrowd": 0,
            }
            for i, row in enumerate(rows)
        ]
        images = [gt.imgs[i] for i in image_ids]
        categories = gt.dataset["categories"]
        return quiet_coco({"images": images, "categories": categories, "annotations": annotations})


def _read_instances(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise YoloqError(f"{path}: cannot read COCO ground truth ({error})") from None
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= data.keys():
        raise YoloqError(
            f"{path}: not a COCO instances file (needs images, annotations, categories)"
        )
    return data


def _mean_valid(precision: np.ndarray) -> float:
    valid = precision[precision > -1]  # -1 marks "no ground truth" in COCOeval
    return float(valid.mean()) if valid.size else math.nan


def _fraction(value: float) -> float:
    return float(value) if value > -1 else math.nan
