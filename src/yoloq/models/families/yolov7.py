"""The YOLOv7 family: configs that name any of YOLOv7's own layers (MP, RepConv, IDetect, ...).

Every family file has the same four sections, in this order: (1) layer list,
(2) modules, (3) head and decode, (4) checkpoint mapping; it ends with its
``Family`` record, which ``yoloq.models.families`` registers.
"""

from __future__ import annotations

import torch
from torch import nn

from yoloq.models.common import (
    Conv,
    autopad,
    batch_norm,
    batch_norm_scale_shift,
    fold_batch_norm,
    is_folded_conv,
    resolve_activation,
)
from yoloq.models.families.base import SHARED_LAYERS, Family, LayerKind, config_modules
from yoloq.models.heads import Detect

# --- (1) Layer list: module name in configs -> how the parser builds it. ---
# Functions, so that the table can name the classes defined further down.


def layer_list() -> dict[str, LayerKind]:
    """The shared layers, the shared ``Detect``, and YOLOv7's own layers."""
    return {**SHARED_LAYERS, "Detect": LayerKind(Detect, "head"), **own_layers()}


def own_layers() -> dict[str, LayerKind]:
    """The layers that only YOLOv7 configs name."""
    return {
        "RepConv": LayerKind(RepConv, "conv"),
        "SPPCSPC": LayerKind(SPPCSPC, "conv", takes_repeats=True),
        "DownC": LayerKind(DownC, "conv", takes_repeats=True),
        "Shortcut": LayerKind(Shortcut, "shortcut"),
        "ReOrg": LayerKind(ReOrg, "reorg"),
        "MP": LayerKind(MP, "same"),
        "SP": LayerKind(SP, "same"),
        "IDetect": LayerKind(IDetect, "head"),
        "IAuxDetect": LayerKind(IAuxDetect, "head"),
    }


def claims(cfg: dict) -> bool:
    """A config is YOLOv7's as soon as it names one of YOLOv7's own layers.

    The shared blocks (Conv, C3, plain Detect, ...) say nothing: YOLOv7 configs
    name them as well as YOLOv5 ones do.
    """
    return not config_modules(cfg).isdisjoint(own_layers())


# --- (2) Modules: the blocks that only YOLOv7 configs name. ---


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


# --- (3) Head and decode: the shared Detect with an anchor_grid buffer, IDetect, IAuxDetect. ---


def head_kwargs(cls: type, anchor_grid_buffer: bool | None) -> dict:
    """YOLOv7's plain Detect registers an ``anchor_grid`` buffer (in pixels), unless the
    checkpoint being loaded lacks one; IDetect and IAuxDetect always register it."""
    if cls is not Detect:
        return {}
    return {"anchor_grid_buffer": True if anchor_grid_buffer is None else anchor_grid_buffer}


class IDetect(Detect):
    """YOLOv7 head: ``ImplicitA`` before and ``ImplicitM`` after each output convolution.

    ``fuse()`` folds both implicit layers into the output convolutions (as the
    official ``IDetect.fuse``); the ``ia``/``im`` modules then stay registered
    but unused, like in the official fused model.
    """

    def __init__(self, nc=80, anchors=(), ch=()):
        super().__init__(nc, anchors, ch, anchor_grid_buffer=True)
        self._add_implicit_layers(ch)

    def _add_implicit_layers(self, ch) -> None:
        self.ia = nn.ModuleList(ImplicitA(c) for c in ch[: self.nl])
        self.im = nn.ModuleList(ImplicitM(self.no * self.na) for _ in ch[: self.nl])
        self.fused = False

    def _head_conv(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return self.m[i](x)
        return self.im[i](self.m[i](self.ia[i](x)))

    @torch.no_grad()
    def fuse(self) -> None:
        if self.fused:
            return
        for conv, add, mul in zip(self.m, self.ia, self.im):
            # conv(x + a) = conv(x) + W @ a ; then (conv(x) + b') * m folds into W and b.
            weight = conv.weight.view(conv.out_channels, -1)
            conv.bias += weight @ add.implicit.view(-1)
            conv.bias *= mul.implicit.view(-1)
            conv.weight *= mul.implicit.view(-1, 1, 1, 1)
        self.fused = True


class IAuxDetect(IDetect):
    """YOLOv7 P6 head: ``IDetect`` on the first ``nl`` inputs plus auxiliary convs ``m2``.

    The auxiliary outputs (lead-guided training) exist only in train mode,
    where the head returns ``2 * nl`` raw levels; eval skips them.
    """

    def __init__(self, nc=80, anchors=(), ch=()):
        # Registration order m, m2, ia, im matches the official state_dict order.
        Detect.__init__(self, nc, anchors, ch, anchor_grid_buffer=True)
        self.m2 = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch[self.nl :])
        self._add_implicit_layers(ch)

    def forward(self, x: list[torch.Tensor]):
        if not self.training:
            return super().forward(x[: self.nl])
        lead = super().forward(x[: self.nl])
        aux = [self._to_levels(conv(xi)) for conv, xi in zip(self.m2, x[self.nl :])]
        return lead + aux

    def output_convs(self) -> list[nn.Conv2d]:
        return list(self.m) + list(self.m2)


# --- (4) Checkpoint mapping: which blocks a checkpoint stores already fused. ---


def match_fused_layout(model: nn.Module, state: dict, pickled_by_name: dict) -> None:
    """Fuse the blocks that the checkpoint stores already fused.

    Conv without ``bn`` and RepConv with ``rbr_reparam`` show in the keys; a
    folded IDetect only in the ``fused`` flag that yoloq's own head pickles.
    """
    for name, module in model.named_modules():
        fused_rep = isinstance(module, RepConv) and f"{name}.rbr_reparam.weight" in state
        fused_head = isinstance(module, IDetect) and getattr(pickled_by_name.get(name), "fused", 0)
        if is_folded_conv(name, module, state) or fused_rep or fused_head:
            module.fuse()


YOLOV7 = Family(
    name="yolov7",
    layers=layer_list(),
    claims=claims,
    head_kwargs=head_kwargs,
    match_fused_layout=match_fused_layout,
)
