"""Non-maximum suppression of raw YOLO predictions, as YOLOv7's test does it."""

from __future__ import annotations

import torch
import torchvision

from yoloq.evaluate.boxes import xywh_to_xyxy

MAX_NMS_CANDIDATES = 30000  # more boxes than this into NMS only cost time


def non_max_suppression(
    prediction: torch.Tensor,
    conf_thres: float = 0.001,
    iou_thres: float = 0.65,
    max_det: int = 300,
    multi_label: bool = True,
) -> list[torch.Tensor]:
    """Per image, detections [n, 6]: x1, y1, x2, y2, conf, class (input pixels).

    `prediction` is [B, anchors, 5 + nc]: xywh in input pixels, objectness and class
    scores after sigmoid. conf = obj * cls (obj alone when nc == 1, whose class score
    carries no information). With `multi_label` a box keeps every class whose conf
    exceeds `conf_thres`; NMS is per class; the `max_det` best are kept.
    """
    if prediction.ndim != 3 or prediction.shape[-1] < 6:
        raise ValueError(
            f"expected predictions [B, anchors, 5 + nc], got {tuple(prediction.shape)}"
        )
    nc = prediction.shape[-1] - 5
    output = []
    for x in prediction:
        x = x[x[:, 4] > conf_thres]
        scores = x[:, 4:5] if nc == 1 else x[:, 5:] * x[:, 4:5]
        boxes = xywh_to_xyxy(x[:, :4])
        if multi_label and nc > 1:
            i, j = (scores > conf_thres).nonzero(as_tuple=True)
            boxes, conf, cls = boxes[i], scores[i, j], j
        else:
            conf, cls = scores.max(dim=1)
            keep = conf > conf_thres
            boxes, conf, cls = boxes[keep], conf[keep], cls[keep]
        if len(conf) > MAX_NMS_CANDIDATES:
            top = conf.topk(MAX_NMS_CANDIDATES).indices
            boxes, conf, cls = boxes[top], conf[top], cls[top]
        keep = torchvision.ops.batched_nms(boxes.float(), conf.float(), cls, iou_thres)[:max_det]
        output.append(torch.cat([boxes[keep], conf[keep, None], cls[keep, None].to(boxes)], 1))
    return output
