"""Building blocks of YOLOv5 (v7.0) and YOLOv7 networks.

Class names, constructor signatures and child names follow the official
repositories so that official state_dicts load with ``strict=True`` and module
paths (``model.0.conv``, ``model.2.cv1.bn``) are the ones users already know.
Every block calls its child modules (never ``F.conv2d`` on stored weights), so
that a quantization pass can swap ``nn.Conv2d`` / ``nn.MaxPool2d`` children in
place. Blocks with a ``fuse()`` method fold BatchNorm (and RepConv branches)
into a single convolution for inference.
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


class Shortcut(nn.Module):
    """YOLOv7 residual layer: the sum of its two inputs (``from`` lists two layers)."""

    def __init__(self, dimension=0):
        super().__init__()
        self.d = dimension

    def forward(self, x):
        return x[0] + x[1]


class MP(nn.Module):
    """YOLOv7 down-sampling max-pool (kernel = stride = ``k``)."""

    def __init__(self, k=2):
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=k)

    def forward(self, x):
        return self.m(x)


class SP(nn.Module):
    """YOLOv7 'same'-size max-pool (used by yolov7-tiny's SPP)."""

    def __init__(self, k=3, s=1):
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=s, padding=k // 2)

    def forward(self, x):
        return self.m(x)


class ReOrg(nn.Module):
    """Space-to-depth: (b, c, h, w) -> (b, 4c, h/2, w/2), in the official channel order."""

    def forward(self, x):
        return torch.cat(
            [x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1
        )


class DownC(nn.Module):
    """YOLOv7-E6 down-sampling: a strided-conv branch and a max-pool branch, concatenated."""

    def __init__(self, c1, c2, n=1, k=2):
        super().__init__()
        self.cv1 = Conv(c1, c1, 1, 1)
        self.cv2 = Conv(c1, c2 // 2, 3, k)
        self.cv3 = Conv(c1, c2 // 2, 1, 1)
        self.mp = nn.MaxPool2d(kernel_size=k, stride=k)

    def forward(self, x):
        return torch.cat((self.cv2(self.cv1(x)), self.cv3(self.mp(x))), dim=1)


class SPPCSPC(nn.Module):
    """YOLOv7 CSP spatial pyramid pooling with parallel max-pools of sizes ``k``."""

    def __init__(self, c1, c2, n=1, shortcut=False, g=1, e=0.5, k=(5, 9, 13)):
        super().__init__()
        hidden = int(2 * c2 * e)
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(c1, hidden, 1, 1)
        self.cv3 = Conv(hidden, hidden, 3, 1)
        self.cv4 = Conv(hidden, hidden, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)
        self.cv5 = Conv(4 * hidden, hidden, 1, 1)
        self.cv6 = Conv(hidden, hidden, 3, 1)
        self.cv7 = Conv(2 * hidden, c2, 1, 1)

    def forward(self, x):
        x1 = self.cv4(self.cv3(self.cv1(x)))
        y1 = self.cv6(self.cv5(torch.cat([x1] + [pool(x1) for pool in self.m], 1)))
        y2 = self.cv2(x)
        return self.cv7(torch.cat((y1, y2), dim=1))


class RepConv(nn.Module):
    """RepVGG block: 3x3 conv+BN, 1x1 conv+BN and (when shapes allow) an identity BN, summed.

    ``fuse()`` re-parameterises the three branches into the single 3x3
    convolution ``rbr_reparam`` (the layout of YOLOv7's deploy configs).
    """

    def __init__(self, c1, c2, k=3, s=1, p=None, g=1, act=True, deploy=False):
        super().__init__()
        if k != 3 or autopad(k, p) != 1:
            raise ValueError("RepConv supports only 3x3 kernels with padding 1")
        self.in_channels, self.out_channels, self.groups = c1, c2, g
        self.act = resolve_activation(act)
        if deploy:
            self.rbr_reparam = nn.Conv2d(c1, c2, k, s, 1, groups=g, bias=True)
            return
        self.rbr_reparam = None
        self.rbr_identity = batch_norm(c1) if c2 == c1 and s == 1 else None
        self.rbr_dense = nn.Sequential(
            nn.Conv2d(c1, c2, k, s, 1, groups=g, bias=False), batch_norm(c2)
        )
        self.rbr_1x1 = nn.Sequential(
            nn.Conv2d(c1, c2, 1, s, 0, groups=g, bias=False), batch_norm(c2)
        )

    def forward(self, x):
        if self.rbr_reparam is not None:
            return self.act(self.rbr_reparam(x))
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            out = out + self.rbr_identity(x)
        return self.act(out)

    def fuse(self) -> None:
        """Replace the branches by one equivalent 3x3 convolution ``rbr_reparam``."""
        if self.rbr_reparam is not None:
            return
        dense = fold_batch_norm(*self.rbr_dense)
        pointwise = fold_batch_norm(*self.rbr_1x1)
        weight = dense.weight + nn.functional.pad(pointwise.weight, [1, 1, 1, 1])
        bias = dense.bias + pointwise.bias
        if self.rbr_identity is not None:
            scale, shift = batch_norm_scale_shift(self.rbr_identity)
            weight = weight + self._identity_kernel().to(weight) * scale.reshape(-1, 1, 1, 1)
            bias = bias + shift
        with torch.no_grad():
            dense.weight.copy_(weight)
            dense.bias.copy_(bias)
        self.rbr_reparam = dense
        self.rbr_dense = self.rbr_1x1 = self.rbr_identity = None

    def _identity_kernel(self) -> torch.Tensor:
        """The 3x3 (grouped) kernel of the identity map: a 1 at the centre of each own channel."""
        per_group = self.in_channels // self.groups
        kernel = torch.zeros(self.in_channels, per_group, 3, 3)
        for channel in range(self.in_channels):
            kernel[channel, channel % per_group, 1, 1] = 1.0
        return kernel


class ImplicitA(nn.Module):
    """YOLOR implicit knowledge added to the input (a learned per-channel offset)."""

    def __init__(self, channel, mean=0.0, std=0.02):
        super().__init__()
        self.channel = channel
        self.implicit = nn.Parameter(torch.empty(1, channel, 1, 1).normal_(mean, std))

    def forward(self, x):
        return self.implicit + x


class ImplicitM(nn.Module):
    """YOLOR implicit knowledge multiplied with the input (a learned per-channel scale)."""

    def __init__(self, channel, mean=1.0, std=0.02):
        super().__init__()
        self.channel = channel
        self.implicit = nn.Parameter(torch.empty(1, channel, 1, 1).normal_(mean, std))

    def forward(self, x):
        return self.implicit * x
