"""Box formats, and the mapping of letterboxed boxes back to original pixels."""

from __future__ import annotations

import numpy as np
import torch

from yoloq.data.letterbox import ImageMeta


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """Centre x, centre y, width, height -> corners x1, y1, x2, y2."""
    xy, wh = boxes[..., :2], boxes[..., 2:4] / 2
    return torch.cat([xy - wh, xy + wh], dim=-1)


def xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """Corners x1, y1, x2, y2 -> centre x, centre y, width, height."""
    return torch.cat([(boxes[..., :2] + boxes[..., 2:4]) / 2, boxes[..., 2:4] - boxes[..., :2]], -1)


def to_original(boxes_xyxy: torch.Tensor, meta: ImageMeta) -> torch.Tensor:
    """Undo letterbox and rectangular padding: input pixels -> original pixels, clipped."""
    left, top = meta.pad
    ratio_x, ratio_y = meta.ratio
    height, width = meta.original_shape
    offset = boxes_xyxy.new_tensor([left, top, left, top])
    scale = boxes_xyxy.new_tensor([ratio_x, ratio_y, ratio_x, ratio_y])
    boxes = (boxes_xyxy - offset) / scale
    limit = boxes_xyxy.new_tensor([width, height, width, height])
    return torch.minimum(boxes.clamp(min=0), limit)


def yolo_to_coco_boxes(labels: np.ndarray, width: int, height: int) -> np.ndarray:
    """YOLO labels [n, 5] (cls, xywh normalised) -> COCO boxes [n, 4] (x, y, w, h pixels,
    top-left corner), clipped to the image."""
    x, y, w, h = (labels[:, i].astype(np.float64) for i in range(1, 5))
    x1 = np.clip((x - w / 2) * width, 0, width)
    y1 = np.clip((y - h / 2) * height, 0, height)
    x2 = np.clip((x + w / 2) * width, 0, width)
    y2 = np.clip((y + h / 2) * height, 0, height)
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=1).reshape(-1, 4)
