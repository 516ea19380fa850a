"""The anchor-based detection head ``Detect`` that YOLOv5 and YOLOv7 share.

Shared because both families name ``Detect`` in their configs and decode its
outputs the same way; they differ only in one buffer, chosen by the
``anchor_grid_buffer`` flag that each family's ``head_kwargs`` hook sets
(YOLOv7's ``IDetect`` and ``IAuxDetect`` extend it in
``yoloq.models.families.yolov7``).

In train mode a head returns the raw per-level maps ``[b, na, ny, nx, 5 + nc]``
(what the loss needs). In eval mode it returns ``(predictions, raw)`` where
``predictions`` is ``[b, anchors, 5 + nc]``: xywh boxes in input pixels, then
objectness and class scores after the sigmoid. The decode uses no in-place
ops, so the eval model traces cleanly for ONNX export.

Buffers match the official heads for strict state_dict loading: every head
registers ``anchors`` (nl, na, 2) in stride units; YOLOv7 heads also register
``anchor_grid`` (nl, 1, na, 1, 1, 2) in pixels, YOLOv5 v7.0's Detect does not.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Detect(nn.Module):
    """One 1x1 output convolution per level, then the sigmoid grid decode.

    ``anchor_grid_buffer`` selects the YOLOv7 layout (an ``anchor_grid``
    buffer in pixels) over YOLOv5 v7.0's (anchor sizes derived from
    ``anchors * stride``); both decode the same boxes.
    """

    def __init__(self, nc=80, anchors=(), ch=(), anchor_grid_buffer=False):
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        anchors = torch.tensor(anchors, dtype=torch.float32).view(self.nl, -1, 2)
        self.register_buffer("anchors", anchors)
        self.anchor_grid_buffer = anchor_grid_buffer
        if anchor_grid_buffer:
            self.register_buffer("anchor_grid", anchors.clone().view(self.nl, 1, -1, 1, 1, 2))
        # Set by the Model once the strides are known (a plain tensor, as in the official code).
        self.stride = torch.ones(self.nl)
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch[: self.nl])

    def forward(self, x: list[torch.Tensor]):
        raw = [self._to_levels(self._head_conv(i, x[i])) for i in range(self.nl)]
        if self.training:
            return raw
        boxes = [self._decode(level, i) for i, level in enumerate(raw)]
        return torch.cat(boxes, 1), raw

    def _head_conv(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.m[i](x)

    def _to_levels(self, x: torch.Tensor) -> torch.Tensor:
        """(b, na * no, ny, nx) -> (b, na, ny, nx, no)."""
        bs, _, ny, nx = x.shape
        return x.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()

    def _decode(self, level: torch.Tensor, i: int) -> torch.Tensor:
        bs, _, ny, nx, _ = level.shape
        stride = self.stride[i]
        xy, wh, scores = level.sigmoid().split((2, 2, self.no - 4), dim=-1)
        xy = (xy * 2.0 - 0.5 + self._grid(nx, ny, level)) * stride
        wh = (wh * 2.0) ** 2 * self._anchor_sizes(i, stride)
        return torch.cat((xy, wh, scores), -1).view(bs, -1, self.no)

    @staticmethod
    def _grid(nx: int, ny: int, like: torch.Tensor) -> torch.Tensor:
        """Cell offsets (x, y), shape (1, 1, ny, nx, 2)."""
        ys = torch.arange(ny, device=like.device, dtype=like.dtype)
        xs = torch.arange(nx, device=like.device, dtype=like.dtype)
        yv, xv = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2)

    def _anchor_sizes(self, i: int, stride: torch.Tensor) -> torch.Tensor:
        """Anchor (w, h) in pixels for level ``i``, shape (1, na, 1, 1, 2)."""
        if self.anchor_grid_buffer:
            return self.anchor_grid[i]
        return (self.anchors[i] * stride).view(1, self.na, 1, 1, 2)

    def set_strides(self, stride: torch.Tensor) -> None:
        """Take the measured strides: anchors into stride units, then the prior biases.

        The Model calls this once after building, so a head of another family
        only has to know what its own strides mean.
        """
        self.stride = stride
        self.check_anchor_order()
        self.anchors /= self.stride.view(-1, 1, 1)
        self.initialize_biases()

    def check_anchor_order(self) -> None:
        """Flip the anchors if their size order disagrees with the stride order (official check)."""
        area = self.anchors.prod(-1).mean(-1).view(-1)
        if (area[-1] - area[0]).sign() != (self.stride[-1] - self.stride[0]).sign():
            self.anchors.copy_(self.anchors.flip(0))
            if self.anchor_grid_buffer:
                self.anchor_grid.copy_(self.anchor_grid.flip(0))

    def output_convs(self) -> list[nn.Conv2d]:
        return list(self.m)

    @torch.no_grad()
    def initialize_biases(self) -> None:
        """Prior objectness (~8 objects per 640 image) and class biases, as the official models."""
        convs = self.output_convs()
        strides = self.stride.tolist() * (len(convs) // self.nl)
        for conv, stride in zip(convs, strides):
            bias = conv.bias.view(self.na, -1)
            bias[:, 4] += math.log(8 / (640 / stride) ** 2)
            bias[:, 5 : 5 + self.nc] += math.log(0.6 / (self.nc - 0.99999))

    def fuse(self) -> None:
        """Nothing to fold in a plain Detect head."""
