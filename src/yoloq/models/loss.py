"""The YOLOv5 / YOLOv7 detection loss: anchor matching, then box, objectness and class terms.

Targets are `[n, 6]` rows of (image index in batch, class, cx, cy, w, h), the box
normalised to the input size, as the data loaders produce them. Predictions are
the raw per-level outputs of the head in train mode, `[b, na, ny, nx, 5 + nc]`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

# Neighbouring cells that also predict a target whose centre lies near them:
# the centre cell, then left, up, right, down (in units of the cell-offset bias).
_CELL_OFFSETS = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float32)
_OFFSET_BIAS = 0.5


@dataclass(frozen=True)
class LossWeights:
    """Gains of the loss terms, at 80 classes, 3 levels and 640 pixels (rescaled to the model)."""

    box: float = 0.05
    obj: float = 1.0
    cls: float = 0.5
    anchor_ratio: float = 4.0  # a target matches an anchor when w, h are within this ratio


def level_balance(levels: int) -> list[float]:
    """Objectness weight per level: small-stride levels have more cells, so weigh them up."""
    return [4.0, 1.0, 0.4] if levels == 3 else [4.0, 1.0, 0.25, 0.06, 0.02][:levels]


class DetectionLoss(nn.Module):
    """`loss, parts = DetectionLoss(model)(raw_levels, targets)`.

    `loss` is summed over the batch (scaled by batch size, as the official
    trainers do); `parts` holds the detached (box, obj, cls) means.
    """

    def __init__(self, model: nn.Module, img_size: int = 640, weights: LossWeights | None = None):
        super().__init__()
        head = model.head if hasattr(model, "head") else model.model[-1]
        self.nl, self.na, self.nc = head.nl, head.na, head.nc
        self.register_buffer("anchors", head.anchors.detach().clone())  # grid units
        w = weights or LossWeights()
        scale = 3 / self.nl
        self.box_gain = w.box * scale
        self.cls_gain = w.cls * self.nc / 80 * scale
        self.obj_gain = w.obj * (img_size / 640) ** 2 * scale
        self.anchor_ratio = w.anchor_ratio
        self.balance = level_balance(self.nl)
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, levels: list[torch.Tensor], targets: torch.Tensor):
        levels = levels[: self.nl]  # auxiliary heads (IAuxDetect) are not trained here
        device = levels[0].device
        box_loss = torch.zeros((), device=device)
        obj_loss = torch.zeros((), device=device)
        cls_loss = torch.zeros((), device=device)
        for i, level in enumerate(levels):
            match = self._match(level, targets.to(device), i)
            target_obj = torch.zeros(level.shape[:4], device=device, dtype=level.dtype)
            if match is not None:
                b, a, gj, gi, target_box, classes = match
                chosen = level[b, a, gj, gi]
                iou = self._iou_with_anchor_boxes(chosen, target_box, self.anchors[i][a])
                box_loss = box_loss + (1.0 - iou).mean()
                target_obj[b, a, gj, gi] = iou.detach().clamp(0).to(target_obj.dtype)
                if self.nc > 1:
                    one_hot = torch.zeros_like(chosen[:, 5:])
                    one_hot[torch.arange(len(classes), device=device), classes] = 1.0
                    cls_loss = cls_loss + self.bce(chosen[:, 5:], one_hot)
            obj_loss = obj_loss + self.bce(level[..., 4], target_obj) * self.balance[i]
        box_loss, obj_loss, cls_loss = (
            box_loss * self.box_gain,
            obj_loss * self.obj_gain,
            cls_loss * self.cls_gain,
        )
        batch = levels[0].shape[0]
        total = (box_loss + obj_loss + cls_loss) * batch
        return total, torch.stack((box_loss, obj_loss, cls_loss)).detach()

    def _iou_with_anchor_boxes(self, chosen, target_box, anchors):
        xy = chosen[:, :2].sigmoid() * 2 - 0.5
        wh = (chosen[:, 2:4].sigmoid() * 2) ** 2 * anchors
        return complete_iou(torch.cat((xy, wh), 1), target_box)

    def _match(self, level: torch.Tensor, targets: torch.Tensor, i: int):
        """Cells and anchors responsible for each target on level `i`, or None.

        Returns (image index, anchor index, cell y, cell x, box relative to the
        cell (cx, cy, w, h in grid units), class).
        """
        if len(targets) == 0:
            return None
        ny, nx = level.shape[2:4]
        anchors = self.anchors[i]
        grid_gain = torch.tensor([1, 1, nx, ny, nx, ny], device=targets.device, dtype=targets.dtype)
        scaled = targets * grid_gain  # (n, 6) in grid units
        ratio = scaled[None, :, 4:6] / anchors[:, None]  # (na, n, 2)
        keep = torch.max(ratio, 1 / ratio).max(2).values < self.anchor_ratio
        anchor_index = torch.arange(self.na, device=targets.device)[:, None].expand_as(keep)
        scaled = scaled[None].expand(self.na, -1, -1)[keep]
        anchor_index = anchor_index[keep]
        if len(scaled) == 0:
            return None
        centre = scaled[:, 2:4]
        mirrored = torch.tensor([nx, ny], device=centre.device, dtype=centre.dtype) - centre
        near_low = (centre % 1 < _OFFSET_BIAS) & (centre > 1)
        near_high = (mirrored % 1 < _OFFSET_BIAS) & (mirrored > 1)
        use = torch.stack(
            (
                torch.ones_like(near_low[:, 0]),
                near_low[:, 0],
                near_low[:, 1],
                near_high[:, 0],
                near_high[:, 1],
            )
        )  # (5, m)
        offsets = (_CELL_OFFSETS.to(centre) * _OFFSET_BIAS)[:, None].expand(-1, len(centre), -1)
        centre_all = centre[None].expand(5, -1, -1)[use]
        cells = (centre_all - offsets[use]).long()
        cells[:, 0].clamp_(0, nx - 1)
        cells[:, 1].clamp_(0, ny - 1)
        rows = scaled[None].expand(5, -1, -1)[use]
        anchor_index = anchor_index[None].expand(5, -1)[use]
        box = torch.cat((centre_all - cells, rows[:, 4:6]), 1)
        return (rows[:, 0].long(), anchor_index, cells[:, 1], cells[:, 0], box, rows[:, 1].long())


def complete_iou(box1: torch.Tensor, box2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """CIoU of paired (cx, cy, w, h) boxes: IoU minus centre-distance and aspect penalties."""
    (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.unbind(1), box2.unbind(1)
    left = torch.maximum(x1 - w1 / 2, x2 - w2 / 2)
    right = torch.minimum(x1 + w1 / 2, x2 + w2 / 2)
    top = torch.maximum(y1 - h1 / 2, y2 - h2 / 2)
    bottom = torch.minimum(y1 + h1 / 2, y2 + h2 / 2)
    inter = (right - left).clamp(0) * (bottom - top).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    enclosing_w = torch.maximum(x1 + w1 / 2, x2 + w2 / 2) - torch.minimum(x1 - w1 / 2, x2 - w2 / 2)
    enclosing_h = torch.maximum(y1 + h1 / 2, y2 + h2 / 2) - torch.minimum(y1 - h1 / 2, y2 - h2 / 2)
    diagonal = enclosing_w**2 + enclosing_h**2 + eps
    centre_distance = (x2 - x1) ** 2 + (y2 - y1) ** 2
    aspect = (4 / math.pi**2) * (torch.atan(w2 / (h2 + eps)) - torch.atan(w1 / (h1 + eps))) ** 2
    with torch.no_grad():
        alpha = aspect / (aspect - iou + (1 + eps))
    return iou - (centre_distance / diagonal + aspect * alpha)
