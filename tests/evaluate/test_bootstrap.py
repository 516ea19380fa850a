"""Paired bootstrap intervals from COCOeval's per-image matches: the unresampled value is
pycocotools' own, an interval covers a known difference, and a zero difference gives an
interval around 0."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from yoloq.evaluate.bootstrap import class_ap, matches_from_cocoeval, paired_bootstrap

CLASSES = 2


def scene(rng, images: int, crowd: bool = False):
    """Ground truth boxes [(image, cls, x, y, w, h, iscrowd)] on 100 x 100 images."""
    boxes = []
    for image in range(images):
        for _ in range(int(rng.integers(1, 5))):
            w, h = rng.uniform(5, 60, 2)
            x, y = rng.uniform(0, 100 - w), rng.uniform(0, 100 - h)
            boxes.append((image, int(rng.integers(CLASSES)), x, y, w, h,
                          int(crowd and rng.random() < 0.1)))
    return boxes


def detect(rng, truth, jitter: float, miss: float = 0.1, false_positives: int = 2):
    """Detections [(image, cls, x, y, w, h, score)]: each box found with probability
    1 - miss, moved by `jitter` pixels; plus a few false positives per image."""
    found = []
    for image, cls, x, y, w, h, _ in truth:
        if rng.random() > miss:
            dx, dy, dw, dh = rng.normal(0, jitter, 4)
            found.append((image, cls, x + dx, y + dy, max(1, w + dw), max(1, h + dh),
                          rng.uniform(0.3, 1)))
    for image in sorted({t[0] for t in truth}):
        for _ in range(false_positives):
            found.append((image, int(rng.integers(CLASSES)), *rng.uniform(0, 50, 2),
                          *rng.uniform(5, 40, 2), rng.uniform(0, 0.6)))
    return found


def cocoeval(truth, detections, images: int) -> COCOeval:
    annotations = [{"id": i + 1, "image_id": t[0], "category_id": t[1], "bbox": list(t[2:6]),
                    "area": t[4] * t[5], "iscrowd": t[6]} for i, t in enumerate(truth)]
    dataset = {"images": [{"id": i, "width": 100, "height": 100} for i in range(images)],
               "annotations": annotations,
               "categories": [{"id": c, "name": str(c)} for c in range(CLASSES)]}
    results = [{"image_id": d[0], "category_id": d[1], "bbox": list(d[2:6]), "score": d[6]}
               for d in detections]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


@pytest.mark.parametrize("crowd", [False, True])
def test_unresampled_value_equals_pycocotools(crowd):
    rng = np.random.default_rng(1)
    truth = scene(rng, 40, crowd)
    evaluator = cocoeval(truth, detect(rng, truth, jitter=3), 40)
    matches = matches_from_cocoeval(evaluator)
    ones = torch.ones(1, 40, dtype=torch.float64)
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]
    for area in range(4):
        ap = torch.stack([class_ap(c, ones)[0] for c in matches.classes[area]], dim=1)  # [T, K]
        for k in range(CLASSES):
            expected = precision[:, :, k, area, -1]
            if (expected > -1).any():
                assert ap[:, k].mean().item() == pytest.approx(expected.mean(), abs=1e-4)
            else:
                assert torch.isnan(ap[:, k]).all()
    intervals = paired_bootstrap(matches, matches, resamples=20)
    assert intervals.map50_95.a == pytest.approx(evaluator.stats[0], abs=1e-4)
    assert intervals.map50.a == pytest.approx(evaluator.stats[1], abs=1e-4)
    for area, stat in zip(("small", "medium", "large"), evaluator.stats[3:6], strict=True):
        if stat == -1:  # no such objects: undefined, as in COCOeval
            assert np.isnan(intervals.by_area[area].a)
        else:
            assert intervals.by_area[area].a == pytest.approx(stat, abs=1e-4)


def paired(seed: int, images: int, jitter_b: float):
    """A and B on the same images: B's boxes are A's, moved further."""
    rng = np.random.default_rng(seed)
    truth = scene(rng, images)
    found_a = detect(rng, truth, jitter=1.5)
    found_b = [(i, c, x + dx, y + dy, w, h, s) for (i, c, x, y, w, h, s), (dx, dy)
               in zip(found_a, rng.normal(0, jitter_b, (len(found_a), 2)), strict=True)]
    return (matches_from_cocoeval(cocoeval(truth, found, images)) for found in (found_a, found_b))


def test_interval_covers_a_known_difference():
    """A population of 300 images, where B is worse than A by a known mAP; 100 samples of
    80 of its images (drawn with replacement, each with its own seed): at least 90 of
    their intervals cover the population's difference."""
    a, b = paired(999, 300, jitter_b=2.0)
    truth = paired_bootstrap(a, b, resamples=1, by_area=False).map50_95.drop
    assert truth > 0.05  # a real difference to cover
    covered = 0
    for seed in range(100):
        sample = np.random.default_rng(seed).integers(300, size=80)
        low, high = paired_bootstrap(a, b, resamples=100, seed=seed, images=sample,
                                     by_area=False).map50_95.drop_interval
        covered += low <= truth <= high
    assert covered >= 90


def test_a_zero_difference_gives_an_interval_around_zero():
    a, _ = paired(5, 60, jitter_b=0.0)
    intervals = paired_bootstrap(a, a, resamples=200)
    low, high = intervals.map50_95.drop_interval
    assert low <= 0 <= high and not intervals.map50_95.significant
    assert intervals.map50_95.a_interval[0] < intervals.map50_95.a < \
        intervals.map50_95.a_interval[1]
