"""Shipped architectures by name, and the one entry point ``load_model``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from yoloq.console import err_console
from yoloq.errors import YoloqError
from yoloq.models.checkpoint import load_checkpoint
from yoloq.models.demo import DEMO_MODELS, demo_model
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
        try:
            return Model(read_model_yaml(path), nc=nc)
        except UnicodeDecodeError:  # a binary file: an export or an engine, say
            raise YoloqError(f"{path}: not a model YAML (a binary file); give a .pt "
                             "checkpoint, a model YAML or an architecture name") from None
    known = ", ".join(list_architectures())
    raise YoloqError(f"{cfg}: neither a model YAML file nor a shipped architecture ({known})")


def has_random_weights(weights: str | Path) -> bool:
    """Whether `load_model(weights)` builds an untrained model: an architecture name or a
    model YAML gives random weights; a checkpoint and the demo give trained ones."""
    return str(weights) not in DEMO_MODELS and Path(str(weights)).suffix not in _CHECKPOINT_SUFFIXES


def load_model(weights: str | Path) -> Model:
    """A model from a checkpoint (``.pt``), a model YAML, a shipped architecture name,
    or ``"demo"`` / ``"demo-v5"`` (the trained demo models of the built-in benchmark).

    Checkpoints (yoloq's own float format or an official one) come back in
    eval mode with their weights; names and YAML files give a randomly
    initialised model (train mode, like any new ``nn.Module``), with a warning on
    stderr (see `has_random_weights`).
    """
    if str(weights) in DEMO_MODELS:
        return demo_model(str(weights))
    if has_random_weights(weights):
        model = build_model(weights)
        # Said loudly: accuracy measured on random weights means nothing, and a name
        # typed for a checkpoint ("yolov7" for "yolov7.pt") would otherwise pass unseen.
        err_console.print(f"warning: {weights} is an architecture, not a checkpoint: the model "
                          "has RANDOM weights, and no accuracy measured with it means anything",
                          style="bold yellow", markup=False, highlight=False, soft_wrap=True)
        return model
    if not Path(weights).is_file():
        raise YoloqError(f"checkpoint not found: {weights}")
    native = read_native(weights)
    if native is not None:
        return load_float_checkpoint(weights, native)
    return load_checkpoint(weights)
