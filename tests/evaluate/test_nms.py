from __future__ import annotations

import pytest
import torch

from yoloq.evaluate import non_max_suppression


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def brute_force_nms(pred, conf_thres, iou_thres, max_det):
    """YOLOv7's multi-label NMS, one box at a time."""
    nc = pred.shape[1] - 5
    candidates = []
    for row in pred.tolist():
        x, y, w, h, obj = row[:5]
        if obj <= conf_thres:
            continue
        for cls in range(nc):
            conf = obj if nc == 1 else obj * row[5 + cls]
            if conf > conf_thres and (nc > 1 or cls == 0):
                candidates.append(([x - w / 2, y - h / 2, x + w / 2, y + h / 2], conf, cls))
    candidates.sort(key=lambda c: -c[1])
    kept = []
    for box, conf, cls in candidates:
        if all(k[2] != cls or iou(k[0], box) <= iou_thres for k in kept):
            kept.append((box, conf, cls))
    return [[*box, conf, cls] for box, conf, cls in kept[:max_det]]


@pytest.mark.parametrize("nc", [1, 4])
def test_nms_equals_brute_force(nc):
    torch.manual_seed(nc)
    anchors = 300
    xy = torch.rand(2, anchors, 2) * 100
    wh = torch.rand(2, anchors, 2) * 40 + 2
    scores = torch.rand(2, anchors, 1 + nc) ** 2
    pred = torch.cat([xy, wh, scores], dim=2).double()
    detections = non_max_suppression(pred, conf_thres=0.05, iou_thres=0.5, max_det=100)
    for image, dets in zip(pred, detections, strict=True):
        reference = torch.tensor(brute_force_nms(image, 0.05, 0.5, 100), dtype=torch.float64)
        assert len(reference) == len(dets) and len(dets) > 10
        torch.testing.assert_close(dets, reference, rtol=0, atol=1e-9)


def test_nms_empty_and_single_label():
    empty = non_max_suppression(torch.zeros(1, 10, 8))
    assert empty[0].shape == (0, 6)
    pred = torch.tensor([[[10.0, 10, 4, 4, 0.9, 0.5, 0.8, 0.3]]])
    multi = non_max_suppression(pred, conf_thres=0.3)[0]
    assert multi[:, 5].tolist() == [1, 0]  # classes 1 (0.72) and 0 (0.45); 0.27 is out
    single = non_max_suppression(pred, conf_thres=0.3, multi_label=False)[0]
    assert single[:, 5].tolist() == [1] and single[0, :4].tolist() == [8, 8, 12, 12]
