"""Load official YOLO ``.pt`` checkpoints (YOLOv5, YOLOv7, ...) without their repositories.

An official checkpoint pickles whole model objects (classes from
``models.yolo``, ``models.common``, ``utils.*`` and ``torch.nn``). Unpickling
them normally imports those modules and runs whatever the pickle names, so
yoloq reads them with a restricted unpickler instead:

* every model class (official or ``torch.nn``) becomes an inert
  ``PickledObject`` that only records its state: nothing is constructed;
* only the few real globals torch needs to rebuild tensors (and numpy scalars)
  are resolved; any other global is refused before anything runs.

The model is then rebuilt from the YAML dict the checkpoint carries
(``model.yaml``) and the tensors found in the recorded ``_parameters`` and
``_buffers`` are loaded with ``strict=True``. Nothing here knows a model
family: which blocks a checkpoint stores already fused is the family's
``match_fused_layout`` hook (``yoloq.models.families``).
"""

from __future__ import annotations

import importlib
import pickle
import types
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from yoloq.errors import YoloqError
from yoloq.models.native import describe_unreadable
from yoloq.models.yolo import Model

# Prefixes of pickled class paths that become inert placeholders.
# yoloq's own model classes are included so that torch.save(yoloq_model) files load too.
_PLACEHOLDER_MODULES = ("models.", "utils.", "torch.nn.modules.", "yoloq.models.")
_PLACEHOLDER_CLASSES = {
    ("argparse", "Namespace"),
    ("pathlib", "Path"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
}

_PYTHON2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}

# The real callables an official checkpoint needs; each only builds data.
_SAFE_GLOBALS = {
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("_codecs", "encode"),  # protocol 2 pickles bytes (numpy scalar data) through it
    ("torch", "Size"),
    ("torch", "device"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
}


class PickledObject:
    """Inert stand-in for an object of a pickled class: it records state and runs nothing."""

    pickled_class = "?"

    def __init__(self, *args, **kwargs):
        self.__dict__["_pickled_args"] = args

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (__dict__, __slots__ state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_pickled_state"] = state

    def __repr__(self):
        return f"<pickled {self.pickled_class}>"


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that maps model classes to ``PickledObject``s and refuses unknown globals."""

    source = "<checkpoint>"  # the file name, for error messages (set per load)

    def find_class(self, module: str, name: str):
        # Protocol-2 pickles use Python 2 names; the stock find_class renames them.
        module = _PYTHON2_MODULES.get(module, module)
        if module.startswith(_PLACEHOLDER_MODULES) or (module, name) in _PLACEHOLDER_CLASSES:
            return _placeholder_class(f"{module}.{name}")
        if (module, name) in _SAFE_GLOBALS:
            return _import_global(module, name)
        if module == "torch" and _is_torch_dtype_or_storage(name):
            return getattr(torch, name)
        raise YoloqError(
            f"{self.source}: refusing to load global '{module}.{name}': it is not part of a "
            "YOLO checkpoint and could run arbitrary code"
        )


_placeholder_cache: dict[str, type] = {}


def _placeholder_class(qualified_name: str) -> type:
    if qualified_name not in _placeholder_cache:
        short = qualified_name.rsplit(".", 1)[-1]
        attrs = {"pickled_class": qualified_name}
        _placeholder_cache[qualified_name] = type(short, (PickledObject,), attrs)
    return _placeholder_cache[qualified_name]


def _import_global(module: str, name: str):
    if module == "numpy.core.multiarray":  # numpy >= 2 moved it; avoid the deprecated alias
        module = "numpy._core.multiarray" if _has_module("numpy._core") else module
    return getattr(importlib.import_module(module), name)


def _has_module(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def _is_torch_dtype_or_storage(name: str) -> bool:
    value = getattr(torch, name, None)
    if isinstance(value, torch.dtype):
        return True
    return name.endswith("Storage") and isinstance(value, type)


def _restricted_pickle_module(source: str) -> types.ModuleType:
    """A stand-in for the ``pickle`` module, for ``torch.load(pickle_module=...)``."""

    class Unpickler(RestrictedUnpickler):
        pass

    Unpickler.source = source
    module = types.ModuleType("yoloq_restricted_pickle")
    module.Unpickler = Unpickler
    module.load = lambda file, **kwargs: Unpickler(file, **kwargs).load()
    return module


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint's top-level dict, with every model object an inert ``PickledObject``."""
    path = Path(path)
    if not path.is_file():
        raise YoloqError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(
            path,
            map_location="cpu",
            pickle_module=_restricted_pickle_module(str(path)),
            weights_only=False,
        )
    except YoloqError:
        raise
    except Exception as e:  # torch and pickle raise many types for corrupt data
        raise YoloqError(f"{path}: {describe_unreadable(path, e)}") from None
    if not isinstance(ckpt, dict):
        raise YoloqError(f"{path}: not a YOLO checkpoint (holds a {type(ckpt).__name__})")
    return ckpt


def load_checkpoint(path: str | Path) -> Model:
    """Load an official ``.pt`` checkpoint of a registered family as a float32 eval-mode Model.

    Takes ``ckpt['ema']`` when present, else ``ckpt['model']``. No code from the
    checkpoint runs: see the module docstring.

    Example::

        model = load_checkpoint("yolov7.pt").fuse()
    """
    path = Path(path)
    ckpt = read_checkpoint(path)
    pickled = ckpt.get("ema") or ckpt.get("model")
    if not isinstance(pickled, PickledObject):
        if all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            raise YoloqError(
                f"{path}: holds a bare state_dict, not a YOLO checkpoint; build the model with "
                "yoloq.models.build_model(cfg) and call load_state_dict"
            )
        raise YoloqError(f"{path}: not a YOLO checkpoint (no 'model' or 'ema' model object)")
    cfg = getattr(pickled, "yaml", None)
    if not isinstance(cfg, dict):
        raise YoloqError(f"{path}: the pickled model carries no YAML config ('yaml' dict)")
    state = OrderedDict(_pickled_state_dict(pickled))
    try:
        model = Model(cfg, anchor_grid_buffer=any(k.endswith(".anchor_grid") for k in state))
    except YoloqError as e:
        raise YoloqError(f"{path}: {e}") from None
    pickled_by_name = dict(_pickled_modules(pickled))
    model.family.match_fused_layout(model, state, pickled_by_name)
    _load_state(model, state, path)
    _copy_batch_norm_settings(model, pickled_by_name)
    names = getattr(pickled, "names", None)
    if names:
        model.names = [str(n) for n in (names.values() if isinstance(names, dict) else names)]
    return model.float().eval()


def _pickled_state_dict(obj: PickledObject, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """The ``state_dict()`` a pickled module would have had: parameters, persistent buffers."""
    state = obj.__dict__
    for name, value in (state.get("_parameters") or {}).items():
        if value is not None:
            yield prefix + name, value.detach()
    transient = state.get("_non_persistent_buffers_set") or set()
    for name, value in (state.get("_buffers") or {}).items():
        if value is not None and name not in transient:
            yield prefix + name, value
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, PickledObject):
            yield from _pickled_state_dict(child, f"{prefix}{name}.")


def _pickled_modules(obj: PickledObject, prefix: str = "") -> Iterator[tuple[str, PickledObject]]:
    yield prefix.rstrip("."), obj
    for name, child in (obj.__dict__.get("_modules") or {}).items():
        if isinstance(child, PickledObject):
            yield from _pickled_modules(child, f"{prefix}{name}.")


def _load_state(model: Model, state: dict, path: Path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        result = _key_mismatch(model, state)
        raise YoloqError(f"{path}: weights do not fit the checkpoint's own config: {result}") from e


def _key_mismatch(model: nn.Module, state: dict) -> str:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and expected[k].shape != state[k].shape]
    parts = [
        f"{label} {keys[:3]}{' ...' if len(keys) > 3 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong))
        if keys
    ]
    return "; ".join(parts) or "unknown mismatch"


def _copy_batch_norm_settings(model: Model, pickled_by_name: dict[str, PickledObject]) -> None:
    """Use the checkpoint's BatchNorm eps/momentum (eps changes the outputs)."""
    for name, module in model.named_modules():
        source = pickled_by_name.get(name)
        if isinstance(module, nn.BatchNorm2d) and source is not None:
            module.eps = float(getattr(source, "eps", module.eps))
            module.momentum = getattr(source, "momentum", module.momentum)
