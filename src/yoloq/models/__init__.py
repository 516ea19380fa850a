"""YOLO detectors by family (YOLOv5 v7.0, YOLOv7): building from configs, loading checkpoints.

Public API::

    load_model(weights)         # .pt checkpoint, YAML path, or a shipped name
    build_model(cfg, nc=None)   # random init from a name, YAML path or dict
    load_checkpoint(path)       # official .pt, read without running pickled code
    list_architectures()        # ['yolov5l', ..., 'yolov7-tiny', ...]
    Model                       # the nn.Module; .fuse() folds BN, RepConv, implicit layers
    family_for(cfg)             # the Family that claims a model dict
    register_family(family)     # add a family of your own

Layout: the generic machinery knows no family; each family is one file.

    common.py       blocks every family's configs name: Conv (+ BN folding), Add,
                    Concat, and the YOLOv5-origin Bottleneck, C3, SPPF
    heads.py        Detect, the anchor-based head YOLOv5 and YOLOv7 share
    families/       the Family record and registry (FAMILIES, family_for,
                    register_family); base.py (Family, LayerKind, shared layers),
                    yolov5.py and yolov7.py, each in four sections: layer list,
                    modules, head and decode, checkpoint mapping
    parse.py        the config parser, building from the claiming family's layers
    yolo.py         Model: parse, measure the strides, forward, fuse
    registry.py     shipped configs (configs/*.yaml), build_model, load_model
    checkpoint.py   restricted unpickler, load_checkpoint (fused layouts: the family's)
    native.py       yoloq's float checkpoint;  quantized.py  quantizing, ptq.pt / qat.pt
    loss.py         the anchor-matching detection loss

A new family (say Ultralytics YOLOv8) is one file of the same shape under
families/ and one ``register_family`` line in ``families/__init__.py``.
"""

from yoloq.models.checkpoint import load_checkpoint, read_checkpoint
from yoloq.models.families import Family, LayerKind, family_for, register_family
from yoloq.models.families.yolov7 import IAuxDetect, IDetect
from yoloq.models.heads import Detect
from yoloq.models.registry import build_model, list_architectures, load_model
from yoloq.models.yolo import Model

__all__ = [
    "Detect",
    "Family",
    "IAuxDetect",
    "IDetect",
    "LayerKind",
    "Model",
    "build_model",
    "family_for",
    "list_architectures",
    "load_checkpoint",
    "load_model",
    "read_checkpoint",
    "register_family",
]
