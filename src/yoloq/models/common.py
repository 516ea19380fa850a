"""Building blocks that configs of every model family may name.

Why these are shared: YOLOv7 grew out of YOLOv5, and its configs (and those of
later families) name the same ``Conv``, ``Concat`` and the YOLOv5-origin CSP
blocks ``Bottleneck``, ``C3`` and ``SPPF``, with the same child names. Keeping
one class per block keeps one state_dict layout and one BatchNorm fold for all
of them. Blocks that only one family names live in that family's file under
``yoloq.models.families``.

Class names, constructor signatures and child names follow the official
repositories so that official state_dicts load with ``strict=True`` and module
paths (``model.0.conv``, ``model.2.cv1.bn``) are the ones users already know.
Every block calls its child modules (never ``F.conv2d`` on stored weights), so
that a quantization pass can swap ``nn.Conv2d`` / ``nn.MaxPool2d`` children in
place. Blocks with a ``fuse()`` method fold BatchNorm into a single convolution
for inference.
"""

from __future__ import annotations

import torch
from torch import nn

# BatchNorm settings of the official models (utils.torch_utils.initialize_weights):
# eps changes the outputs, so trained weights are only reproduced with this value.
BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def autopad(k: int | tuple, p: int | None = None, d: int = 1) -> int | list:
    """Padding that keeps the spatial size ('same') for kernel ``k`` and dilation ``d``."""
    if d > 1:
        k = d * (k - 1) + 1 if isinstance(k, int) else [d * (x - 1) + 1 for x in k]
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def resolve_activation(act: bool | nn.Module) -> nn.Module:
    """``True`` means the default SiLU, a module is used as given, anything else is identity."""
    if act is True:
        return nn.SiLU()
    return act if isinstance(act, nn.Module) else nn.Identity()


def batch_norm_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(scale, shift)`` with ``bn(x) == x * scale + shift`` in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def fold_batch_norm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new convolution (with bias) equal to ``bn(conv(x))`` in eval mode."""
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
    ).to(conv.weight)
    scale, shift = batch_norm_scale_shift(bn)
    conv_bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        fused.bias.copy_(shift + conv_bias * scale)
    return fused


class Conv(nn.Module):
    """Conv2d + BatchNorm2d + activation, ``Conv(c1, c2, k, s, p, g, act)`` as in YOLOv7.

    YOLOv5's extra ``d`` (dilation) is a keyword argument here; the shipped and
    official configs never pass it positionally.
    """

    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, act=True, d=1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = batch_norm(c2)
        self.act = resolve_activation(act)

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)

    def fuse(self) -> None:
        """Fold the BatchNorm into the convolution; ``bn`` becomes None (as after official fuse)."""
        if self.bn is not None:
            self.conv = fold_batch_norm(self.conv, self.bn)
            self.bn = None


def is_folded_conv(name: str, module: nn.Module, state: dict) -> bool:
    """Whether ``state`` stores the ``Conv`` at ``name`` already folded (no ``bn`` keys)."""
    return isinstance(module, Conv) and f"{name}.bn.weight" not in state


class Add(nn.Module):
    """Residual sum ``identity + branch`` as a module, so quantizers can be attached to it."""

    def forward(self, identity, branch):
        return identity + branch


class Bottleneck(nn.Module):
    """YOLOv5 bottleneck: 1x1 then 3x3 Conv, with a residual ``Add`` when shapes allow."""

    def __init__(self, c1, c2, shortcut=True, g=1, e=0.5):
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(hidden, c2, 3, 1, g=g)
        self.add = Add() if shortcut and c1 == c2 else None

    def forward(self, x):
        branch = self.cv2(self.cv1(x))
        return self.add(x, branch) if self.add is not None else branch


class C3(nn.Module):
    """YOLOv5 CSP block with three convolutions and ``n`` bottlenecks."""

    def __init__(self, c1, c2, n=1, shortcut=True, g=1, e=0.5):
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(c1, hidden, 1, 1)
        self.cv3 = Conv(2 * hidden, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPPF(nn.Module):
    """YOLOv5 fast spatial pyramid pooling: one max-pool applied three times in a chain."""

    def __init__(self, c1, c2, k=5):
        super().__init__()
        hidden = c1 // 2
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(hidden * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Concat(nn.Module):
    """Concatenate a list of tensors along ``dimension``."""

    def __init__(self, dimension=1):
        super().__init__()
        self.d = dimension

    def forward(self, x):
        return torch.cat(x, self.d)
