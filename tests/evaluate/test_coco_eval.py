from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from yoloq.data import ImageMeta
from yoloq.errors import YoloqError
from yoloq.evaluate import CocoEvaluator, yolo_to_coco_boxes

NAMES = ("a", "b", "c")


def test_yolo_labels_to_coco_boxes_by_hand():
    labels = np.array([[0, 0.5, 0.5, 0.5, 0.5], [2, 0.1, 0.9, 0.2, 0.2], [1, 0.95, 0.5, 0.2, 0.1]])
    boxes = yolo_to_coco_boxes(labels, width=64, height=32)
    # centre (32, 16) size 32x16; corner (0, 25.6) size 12.8x6.4; x 54.4..67.2 clipped to 64
    expected = [[16, 8, 32, 16], [0, 25.6, 12.8, 6.4], [54.4, 14.4, 9.6, 3.2]]
    np.testing.assert_allclose(boxes, expected, atol=1e-9)


def random_scene(rng, images=8):
    """Ground truth in pixels (x, y, w, h), metas with YOLO labels, noisy detections."""
    scene = []
    for i in range(images):
        width, height = int(rng.integers(80, 200)), int(rng.integers(80, 200))
        n = int(rng.integers(0, 6))
        wh = rng.uniform(4, 60, (n, 2))  # small and medium boxes (COCO's area ranges)
        xy = rng.uniform(0, 1, (n, 2)) * ([width, height] - wh)
        classes = rng.integers(0, len(NAMES), n)
        labels = np.column_stack([classes, (xy + wh / 2) / [width, height], wh / [width, height]])
        detections = []
        for (x, y), (w, h), cls in zip(xy, wh, classes, strict=True):
            for _ in range(int(rng.integers(0, 3))):  # noisy duplicates, some misclassified
                jitter = rng.normal(0, 2, 4)
                box = [x + jitter[0], y + jitter[1], w + abs(jitter[2]), h + abs(jitter[3])]
                label = cls if rng.random() < 0.8 else rng.integers(0, len(NAMES))
                detections.append([*box, rng.random(), label])
        for _ in range(int(rng.integers(0, 4))):  # false positives
            detections.append([*rng.uniform(0, 30, 4), rng.random(), rng.integers(0, 3)])
        meta = ImageMeta(Path(f"{i}.png"), (height, width), (1.0, 1.0), (0, 0), labels)
        scene.append((meta, np.column_stack([xy, wh]).reshape(-1, 4), classes, detections))
    return scene


def direct_pycocotools(scene):
    """The same boxes straight into pycocotools: GT dict and loadRes, as in its docs."""
    images, annotations, results = [], [], []
    for image_id, (meta, boxes, classes, detections) in enumerate(scene):
        height, width = meta.original_shape
        images.append({"id": image_id, "width": width, "height": height})
        for box, cls in zip(boxes, classes, strict=True):
            area = float(box[2] * box[3])
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(cls), "bbox": box.tolist(),
                                "area": area, "iscrowd": 0})  # fmt: skip
        for x, y, w, h, score, cls in detections:
            results.append({"image_id": image_id, "category_id": int(cls),
                            "bbox": [x, y, w, h], "score": score})  # fmt: skip
    categories = [{"id": i, "name": n} for i, n in enumerate(NAMES)]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations, "categories": categories}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def as_xyxy(detections) -> torch.Tensor:
    d = torch.tensor(detections, dtype=torch.float64).reshape(-1, 6)
    return torch.cat([d[:, :2], d[:, :2] + d[:, 2:4], d[:, 4:]], 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_evaluator_equals_direct_pycocotools(seed):
    scene = random_scene(np.random.default_rng(seed))
    evaluator = CocoEvaluator(NAMES)
    for start in range(0, len(scene), 3):  # in batches of three
        part = scene[start : start + 3]
        evaluator.update([as_xyxy(s[3]) for s in part], [s[0] for s in part])
    metrics = evaluator.summarize()
    reference = direct_pycocotools(scene)
    expected = np.where(reference.stats == -1, np.nan, reference.stats)  # -1: no such boxes
    np.testing.assert_allclose(metrics.stats, expected, rtol=0, atol=1e-6)
    for k in range(len(NAMES)):
        precision = reference.eval["precision"][:, :, k, 0, 2]
        assert metrics.per_class_ap[k] == pytest.approx(precision[precision > -1].mean(), abs=1e-6)
    assert metrics.images == len(scene)


def test_perfect_detections_score_one():
    scene = random_scene(np.random.default_rng(3))
    evaluator = CocoEvaluator(NAMES)
    for meta, boxes, classes, _ in scene:
        perfect = [[*box, 0.9, cls] for box, cls in zip(boxes, classes, strict=True)]
        evaluator.update([as_xyxy(perfect)], [meta])
    metrics = evaluator.summarize()
    assert metrics.map50_95 == pytest.approx(1.0) and metrics.map50 == pytest.approx(1.0)
    assert all(ap == pytest.approx(1.0) for ap in metrics.per_class_ap)


def test_no_detections_score_zero():
    scene = random_scene(np.random.default_rng(4))
    evaluator = CocoEvaluator(NAMES)
    for meta, *_ in scene:
        evaluator.update([torch.zeros(0, 6)], [meta])
    assert evaluator.summarize().map50_95 == 0.0


def test_coco_json_ground_truth_with_category_map(tmp_path):
    scene = random_scene(np.random.default_rng(5), images=4)
    category_ids = [3, 7, 9]
    images, annotations = [], []
    for i, (meta, boxes, classes, _) in enumerate(scene):
        height, width = meta.original_shape
        images.append({"id": 1000 + i, "file_name": f"{1000 + i:012d}.jpg",
                       "width": width, "height": height})  # fmt: skip
        for box, cls in zip(boxes, classes, strict=True):
            annotations.append({"id": len(annotations) + 1, "image_id": 1000 + i,
                                "category_id": category_ids[cls], "bbox": box.tolist(),
                                "area": float(box[2] * box[3]), "iscrowd": 0})  # fmt: skip
    categories = [{"id": c, "name": n} for c, n in zip(category_ids, NAMES, strict=True)]
    instances = tmp_path / "instances_val.json"
    instances.write_text(json.dumps({"images": images, "annotations": annotations,
                                     "categories": categories}))  # fmt: skip
    from_json = CocoEvaluator(NAMES, ground_truth=instances, category_ids=category_ids)
    from_labels = CocoEvaluator(NAMES)
    for i, (meta, _, _, detections) in enumerate(scene):
        renamed = ImageMeta(Path(f"{1000 + i:012d}.jpg"), *list(vars(meta).values())[1:])
        from_json.update([as_xyxy(detections)], [renamed])
        from_labels.update([as_xyxy(detections)], [meta])
    np.testing.assert_allclose(
        from_json.summarize().stats, from_labels.summarize().stats, atol=1e-6
    )

    stranger = CocoEvaluator(NAMES, ground_truth=instances, category_ids=category_ids)
    stranger.update([torch.zeros(0, 6)], [scene[0][0]])  # file 0.png: id 0 is not in the JSON
    with pytest.raises(YoloqError, match="instances_val.json: 1 image"):
        stranger.summarize()
