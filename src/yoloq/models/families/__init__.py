"""Model families by name: which layers a config may name, and how it is built and loaded.

One file per family, all of the same shape (layer list, modules, head and
decode, checkpoint mapping, then the ``Family`` record), and one
``register_family`` line for each below. ``family_for(cfg)`` picks the one
family that claims a model dict; users add their own with ``register_family``.

    base.py     Family, LayerKind, the layers shared by every family
    yolov5.py   YOLOv5 (v7.0): the shared blocks and Detect without anchor_grid
    yolov7.py   YOLOv7: RepConv, SPPCSPC, MP, ... and IDetect, IAuxDetect
"""

from __future__ import annotations

from yoloq.errors import YoloqError
from yoloq.models.families.base import Family, LayerKind, config_modules
from yoloq.models.families.yolov5 import YOLOV5
from yoloq.models.families.yolov7 import YOLOV7

FAMILIES: dict[str, Family] = {}


def register_family(family: Family, replace: bool = False) -> Family:
    """Add ``family`` to the registry; ``replace`` allows taking over an existing name."""
    if family.name in FAMILIES and not replace:
        raise YoloqError(f"a model family named {family.name!r} is already registered")
    FAMILIES[family.name] = family
    return family


register_family(YOLOV5)
register_family(YOLOV7)


def family_for(cfg: dict) -> Family:
    """The one registered family that claims the model dict ``cfg``."""
    claimants = [family for family in FAMILIES.values() if family.claims(cfg)]
    if len(claimants) == 1:
        return claimants[0]
    modules = ", ".join(sorted(config_modules(cfg)))
    if not claimants:
        known = ", ".join(FAMILIES)
        raise YoloqError(f"no model family ({known}) claims a config of modules {modules}")
    names = ", ".join(family.name for family in claimants)
    raise YoloqError(f"several model families ({names}) claim a config of modules {modules}")


def known_modules() -> set[str]:
    """Every module name that some registered family's configs may use."""
    return {name for family in FAMILIES.values() for name in family.layers}


def head_classes() -> tuple[type, ...]:
    """The classes of every registered family's detection heads."""
    kinds = (kind for family in FAMILIES.values() for kind in family.layers.values())
    return tuple({kind.cls: None for kind in kinds if kind.channels == "head"})


__all__ = [
    "FAMILIES",
    "Family",
    "LayerKind",
    "family_for",
    "head_classes",
    "known_modules",
    "register_family",
]
