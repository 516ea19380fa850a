from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from yoloq.data import create_val_loader, label_path, load_data_config, load_split
from yoloq.evaluate import EvalResult, evaluate, non_max_suppression

NAMES = ("circle", "square", "triangle")  # as in conftest.labelled_dataset


def perfect_raw(batch, nc: int, extra: int = 5) -> torch.Tensor:
    """Raw predictions that hit every target exactly, plus low-score noise anchors."""
    b, _, height, width = batch.images.shape
    raw = torch.zeros(b, 4 + extra, 5 + nc)
    raw[..., :2] = 10.0
    raw[..., 2:4] = 4.0
    raw[..., 4] = 0.0005  # under conf_thres: dropped
    for slot, (i, cls, x, y, w, h) in enumerate(batch.targets.tolist()):
        raw[int(i), slot, :4] = torch.tensor([x * width, y * height, w * width, h * height])
        raw[int(i), slot, 4] = 0.95
        raw[int(i), slot, 5 + int(cls)] = 0.9
    return raw


def replay(raws):
    queue = iter(raws)
    return lambda images: (next(queue), "second output ignored")


def test_perfect_predictions_score_one_and_result_round_trips(labelled_dataset, tmp_path):
    loader = create_val_loader(load_split(load_data_config(labelled_dataset), "val"), 64, 4, 32)
    raws = [perfect_raw(batch, len(NAMES)) for batch in loader]
    result = evaluate(replay(raws), loader, progress=False)
    assert result.map50_95 == pytest.approx(1.0) and result.map50 == pytest.approx(1.0)
    assert result.images == 6 and result.model_seconds >= 0 and result.eval_seconds > 0
    assert sum(result.per_class_instances.values()) == sum(i % 5 for i in range(6))
    result.save(tmp_path / "result.json")
    data = json.loads((tmp_path / "result.json").read_text())
    assert EvalResult.from_dict(data).to_dict() == result.to_dict() == data


def test_whole_evaluator_equals_direct_pycocotools(labelled_dataset):
    """Random raw predictions through evaluate(), against pycocotools fed by hand: GT read
    straight from the label files, boxes mapped back with the letterbox formula."""
    loader = create_val_loader(load_split(load_data_config(labelled_dataset), "val"), 96, 4, 32)
    generator = torch.Generator().manual_seed(0)
    raws, batches = [], list(loader)
    for batch in batches:
        b, _, height, width = batch.images.shape
        noise = torch.rand(b, 200, 5 + len(NAMES), generator=generator)
        raw = perfect_raw(batch, len(NAMES), extra=200)
        raw[:, -200:] = noise * torch.tensor([width, height, 30, 30, 1, 1, 1, 1])
        # Wrong classes on the true boxes too, so that multi-label NMS keeps several.
        raw[:, :4, 5:] = torch.maximum(raw[:, :4, 5:], noise[:, :4, 5:] * 0.5)
        raws.append(raw)
    result = evaluate(replay(raws), loader, progress=False)

    images, annotations, detections = [], [], []
    for raw, batch in zip(raws, batches, strict=True):
        for dets, meta in zip(non_max_suppression(raw), batch.metas, strict=True):
            image_id = len(images)
            width, height = Image.open(meta.path).size
            images.append({"id": image_id, "width": width, "height": height})
            for line in label_path(meta.path).read_text().splitlines():
                cls, x, y, w, h = map(float, line.split())
                box = [(x - w / 2) * width, (y - h / 2) * height, w * width, h * height]
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                    "category_id": int(cls), "bbox": box,
                                    "area": box[2] * box[3], "iscrowd": 0})  # fmt: skip
            (left, top), (rx, ry) = meta.pad, meta.ratio
            for x1, y1, x2, y2, score, cls in dets.tolist():
                x1, x2 = (min(max((v - left) / rx, 0), width) for v in (x1, x2))
                y1, y2 = (min(max((v - top) / ry, 0), height) for v in (y1, y2))
                detections.append({"image_id": image_id, "category_id": int(cls),
                                   "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})  # fmt: skip
    categories = [{"id": i, "name": n} for i, n in enumerate(NAMES)]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations, "categories": categories}
        gt.createIndex()
        reference = COCOeval(gt, gt.loadRes(detections), "bbox")
        reference.evaluate()
        reference.accumulate()
        reference.summarize()
    assert 0.05 < reference.stats[0] < 0.99  # not trivial: noise lowers the score
    expected = np.where(reference.stats == -1, np.nan, reference.stats)
    np.testing.assert_allclose(result.stats, expected, rtol=0, atol=1e-6)
    assert result.map50_95 == pytest.approx(reference.stats[0], abs=1e-6)


def test_prediction_shape_mismatch_is_a_clear_error(labelled_dataset):
    from yoloq.errors import YoloqError

    loader = create_val_loader(load_split(load_data_config(labelled_dataset), "val"), 64, 4, 32)
    with pytest.raises(YoloqError, match=r"expected \[B, anchors, 8\]"):
        evaluate(lambda x: torch.zeros(len(x), 10, 7), loader, progress=False)
