"""Shipped architectures by name, and the one entry point ``load_model``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from yoloq.errors import YoloqError
from yoloq.models.checkpoint import load_checkpoint
from yoloq.models.demo import DEMO, demo_model
from yoloq.models.native import load_float_checkpoint, read_native
from yoloq.models.yolo import Model, read_model_yaml

_CONFIGS = resources.files("yoloq.models") / "configs"
_CHECKPOINT_SUFFIXES = (".pt", ".pth")
_YAML_SUFFIXES = (".yaml", ".yml")


def list_architectures() -> list[str]:
    """Names of the architectures that ship with yoloq, e.g. ``'yolov7-tiny'``."""
    return sorted(p.name.rsplit(".", 1)[0] for p in _CONFIGS.iterdir() if p.name.endswith(".yaml"))


def architecture_config(name: str) -> dict:
    """The model dict of a shipped architecture."""
    if name not in list_architectures():
        known = ", ".join(list_architectures())
        raise YoloqError(f"unknown architecture {name!r} (known: {known})")
    with resources.as_file(_CONFIGS / f"{name}.yaml") as path:
        return read_model_yaml(path)


def build_model(cfg: str | Path | dict, nc: int | None = None) -> Model:
    """A randomly initialised model from a shipped name, a YAML path or a model dict.

    ``nc`` overrides the config's number of classes.

    Example::

        model = build_model("yolov7-tiny", nc=3)
    """
    if isinstance(cfg, dict):
        return Model(cfg, nc=nc)
    if isinstance(cfg, str) and not cfg.endswith(_YAML_SUFFIXES) and cfg in list_architectures():
        return Model(architecture_config(cfg), nc=nc)
    path = Path(cfg)
    if path.suffix in _YAML_SUFFIXES or path.is_file():
        return Model(read_model_yaml(path), nc=nc)
    known = ", ".join(list_architectures())
    raise YoloqError(f"{cfg}: neither a model YAML file nor a shipped architecture ({known})")


def load_model(weights: str | Path) -> Model:
    """A model from a checkpoint (``.pt``), a model YAML, a shipped architecture name,
    or ``"demo"`` (the trained demo model of the built-in benchmark).

    Checkpoints (yoloq's own float format or an official one) come back in
    eval mode with their weights; names and YAML files give a randomly
    initialised model (train mode, like any new ``nn.Module``).
    """
    if str(weights) == DEMO:
        return demo_model()
    if Path(weights).suffix not in _CHECKPOINT_SUFFIXES:
        return build_model(weights)
    if not Path(weights).is_file():
        raise YoloqError(f"checkpoint not found: {weights}")
    native = read_native(weights)
    if native is not None:
        return load_float_checkpoint(weights, native)
    return load_checkpoint(weights)
