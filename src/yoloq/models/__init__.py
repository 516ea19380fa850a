"""YOLOv5 (v7.0) and YOLOv7 detectors: building from configs and loading official checkpoints.

Public API::

    load_model(weights)         # .pt checkpoint, YAML path, or a shipped name
    build_model(cfg, nc=None)   # random init from a name, YAML path or dict
    load_checkpoint(path)       # official .pt, read without running pickled code
    list_architectures()        # ['yolov5l', ..., 'yolov7-tiny', ...]
    Model                       # the nn.Module; .fuse() folds BN, RepConv, implicit layers
"""

from yoloq.models.checkpoint import load_checkpoint, read_checkpoint
from yoloq.models.heads import Detect, IAuxDetect, IDetect
from yoloq.models.registry import build_model, list_architectures, load_model
from yoloq.models.yolo import Model

__all__ = [
    "Detect",
    "IAuxDetect",
    "IDetect",
    "Model",
    "build_model",
    "list_architectures",
    "load_checkpoint",
    "load_model",
    "read_checkpoint",
]
