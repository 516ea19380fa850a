"""The config-driven detection model, for any registered family (YOLOv5, YOLOv7, ...)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import yaml
from torch import nn

from yoloq.errors import YoloqError
from yoloq.models.families import Family, family_for
from yoloq.models.parse import find_head, parse_model, validate_model_dict

# Input size for the dry run that measures the strides: twice the largest
# official stride is enough, and small keeps building cheap.
_STRIDE_PROBE_SIZE = 256


class Model(nn.Module):
    """A YOLO detector built from a model dict in the official schema.

    Attributes as in the official code: ``yaml`` (the dict), ``model`` (an
    ``nn.Sequential`` whose layers carry ``.i``, ``.f``, ``.type``, ``.np``),
    ``save``, ``stride`` (tensor), ``names`` and ``nc``.

    ``model(x)`` returns, in eval mode, ``(predictions, raw_levels)`` with
    predictions ``[b, anchors, 5 + nc]`` (xywh in input pixels, sigmoid
    scores); in train mode the list of raw levels ``[b, na, ny, nx, 5 + nc]``.
    """

    def __init__(self, cfg: dict, nc: int | None = None, anchor_grid_buffer: bool | None = None):
        super().__init__()
        self.yaml = copy.deepcopy(cfg)
        validate_model_dict(self.yaml, "model config")
        if nc is not None:
            self.yaml["nc"] = nc
        ch = self.yaml.setdefault("ch", 3)
        self.model, self.save = parse_model(self.yaml, ch, anchor_grid_buffer, self.family)
        self.names = [f"class{i}" for i in range(self.nc)]
        head = find_head(self.model)
        head.set_strides(self._measure_strides(ch))
        self.stride = head.stride

    @property
    def nc(self) -> int:
        return self.yaml["nc"]

    @property
    def family(self) -> Family:
        """The model family that claims the config (a lookup: nothing extra is pickled)."""
        return family_for(self.yaml)

    @property
    def head(self) -> nn.Module:
        return self.model[-1]

    def forward(self, x: torch.Tensor):
        outputs: list[torch.Tensor | None] = []
        for layer in self.model:
            if layer.f != -1:
                x = _gather_inputs(layer.f, x, outputs)
            x = layer(x)
            outputs.append(x if layer.i in self.save else None)
        return x

    @torch.no_grad()
    def _measure_strides(self, ch: int) -> torch.Tensor:
        """Strides from the raw output sizes of a dry run (eval mode, so no BN statistics move)."""
        was_training = self.training
        self.eval()
        size = _STRIDE_PROBE_SIZE
        _, raw = self.forward(torch.zeros(1, ch, size, size))
        self.train(was_training)
        return torch.tensor([size / level.shape[-2] for level in raw])

    def fuse(self) -> Model:
        """Fold Conv+BN, re-parameterise RepConv and fold IDetect's implicit layers; in place.

        Returns ``self``. Meant for inference: the folded BatchNorm no longer trains.
        """
        for module in list(self.modules()):
            fuse = getattr(module, "fuse", None)
            if module is not self and callable(fuse):
                fuse()
        for layer in self.model:
            layer.np = sum(p.numel() for p in layer.parameters())
        return self

    def _apply(self, fn, *args, **kwargs):
        # The strides are plain tensors (not buffers), as in the official model: move them too.
        self = super()._apply(fn, *args, **kwargs)
        self.head.stride = fn(self.head.stride)
        self.stride = self.head.stride
        return self


def _gather_inputs(f, x, outputs):
    if isinstance(f, int):
        return outputs[f]
    return [x if j == -1 else outputs[j] for j in f]


def read_model_yaml(path: str | Path) -> dict:
    """Read a model config file in the official schema."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            d = yaml.safe_load(f)
    except OSError as e:
        raise YoloqError(f"cannot read model config {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise YoloqError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(d, dict):
        raise YoloqError(f"{path} is not a model config (expected a mapping at the top level)")
    validate_model_dict(d, str(path))
    return d
