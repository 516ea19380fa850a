"""Model families: each shipped config is claimed by its own family, and users can add one."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from yoloq.errors import YoloqError
from yoloq.models import build_model, family_for, list_architectures, load_checkpoint
from yoloq.models.families import FAMILIES, register_family
from yoloq.models.families.base import SHARED_LAYERS, Family, LayerKind, config_modules
from yoloq.models.families.yolov5 import match_fused_layout as yolov5_fused_layout
from yoloq.models.heads import Detect
from yoloq.models.registry import architecture_config


@pytest.mark.parametrize("name", list_architectures())
def test_each_shipped_architecture_is_claimed_by_its_own_family_only(name):
    expected = "yolov7" if name.startswith("yolov7") else "yolov5"
    cfg = architecture_config(name)
    assert [f.name for f in FAMILIES.values() if f.claims(cfg)] == [expected]
    # Every module the config names is in the family's table: it builds (narrow, to be quick).
    assert config_modules(cfg) <= FAMILIES[expected].layers.keys()
    cfg.update(width_multiple=min(cfg["width_multiple"], 0.125), depth_multiple=0.33)
    model = build_model(cfg)
    assert model.family is FAMILIES[expected] is family_for(cfg)
    assert any(k.endswith(".anchor_grid") for k in model.state_dict()) is (expected == "yolov7")
    assert model.head.type == cfg["head"][-1][2]
    assert model.stride.tolist()[:3] == [8.0, 16.0, 32.0]


def _tiny_config() -> dict:
    """Conv, then the made-up family's own 'TinyConv' layer, then its Detect."""
    return {
        "nc": 2,
        "depth_multiple": 1.0,
        "width_multiple": 1.0,
        "anchors": [[10, 13, 16, 30]],
        "backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "TinyConv", [16, 3, 2]]],
        "head": [[[-1], 1, "Detect", ["nc", "anchors"]]],
    }


@pytest.fixture
def tiny_family():
    """A family of its own layer table; its hooks record that the builder and loader used them."""
    calls = []

    def head_kwargs(cls, anchor_grid_buffer):
        calls.append("head_kwargs")
        return {"anchor_grid_buffer": True}

    def match_fused_layout(model, state, pickled_by_name):
        calls.append("match_fused_layout")
        yolov5_fused_layout(model, state, pickled_by_name)

    layers = {"Conv": SHARED_LAYERS["Conv"], "TinyConv": SHARED_LAYERS["Conv"]}
    layers["Detect"] = LayerKind(Detect, "head")
    family = Family(
        name="tiny",
        layers=layers,
        claims=lambda cfg: "TinyConv" in config_modules(cfg),
        head_kwargs=head_kwargs,
        match_fused_layout=match_fused_layout,
    )
    register_family(family)
    try:
        yield family, calls
    finally:
        FAMILIES.pop("tiny")


def test_unregistered_layer_names_are_refused_by_name():
    with pytest.raises(YoloqError, match="unknown module 'TinyConv'"):
        build_model(_tiny_config())


def test_a_registered_family_is_picked_built_and_loaded(tiny_family, tmp_path):
    family, calls = tiny_family
    assert family_for(_tiny_config()) is family
    model = build_model(_tiny_config()).eval()
    assert model.family is family and calls == ["head_kwargs"]
    assert [layer.type for layer in model.model] == ["Conv", "TinyConv", "Detect"]
    assert "model.2.anchor_grid" in model.state_dict()  # from the family's head_kwargs
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        predictions, _ = model(x)
    assert predictions.shape == (1, 2 * 8 * 8, 7)

    path = tmp_path / "tiny.pt"
    torch.save({"model": model.fuse()}, path)
    loaded = load_checkpoint(path)
    assert calls[-1] == "match_fused_layout" and loaded.model[1].bn is None
    with torch.no_grad():
        assert torch.allclose(loaded(x)[0], model(x)[0], atol=1e-5)


def test_family_conflicts_are_errors(tiny_family, monkeypatch):
    family, _ = tiny_family
    with pytest.raises(YoloqError, match="already registered"):
        register_family(family)
    config = _tiny_config()
    config["backbone"].append([-1, 1, "C3", [16]])  # known to YOLOv5, not to the tiny family
    with pytest.raises(YoloqError, match="'C3', which the tiny family lacks"):
        build_model(config)
    monkeypatch.setitem(FAMILIES, "rival", dataclasses.replace(family, name="rival"))
    with pytest.raises(YoloqError, match=r"several model families \(tiny, rival\)"):
        family_for(_tiny_config())
