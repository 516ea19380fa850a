"""Tiny models the tests share."""

from __future__ import annotations

import torch
import torch.nn as nn

from yoloq.quant import Add, Concat


class TinyCNN(nn.Module):
    """Conv, MaxPool, a Concat of two branches, a residual Add, a ConvTranspose, a Linear."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, 2, 1)
        self.pool = nn.MaxPool2d(2)
        self.left = nn.Conv2d(c, c, 1)
        self.right = nn.Conv2d(c, c, 3, 1, 1)
        self.concat = Concat(1)
        self.body = nn.Conv2d(2 * c, 2 * c, 3, 1, 1)
        self.add = Add()
        self.up = nn.ConvTranspose2d(2 * c, c, 2, 2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.stem(x)))
        x = self.concat([torch.relu(self.left(x)), torch.relu(self.right(x))])
        x = self.add(x, torch.relu(self.body(x)))
        x = torch.relu(self.up(x))
        return self.fc(self.gap(x).flatten(1))


def smooth_images(count: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    low = torch.rand(count, 3, size // 4, size // 4, generator=generator)
    return nn.functional.interpolate(low, size=(size, size), mode="bilinear")
