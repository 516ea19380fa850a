"""Building models from the shipped configs and from custom YAML files."""

from __future__ import annotations

import pytest
import torch
import yaml

from yoloq.errors import YoloqError
from yoloq.models import IAuxDetect, IDetect, build_model, list_architectures, load_model
from yoloq.models.common import Add, Bottleneck

# Official parameter counts after fuse() (the numbers the official repos print).
OFFICIAL_FUSED_PARAMETERS = {
    "yolov7": 36_907_898,
    "yolov7-tiny": 6_221_370,
    "yolov7x": 71_314_746,
    "yolov5s": 7_225_885,
    "yolov5n": 1_867_405,
}

TINY_CONFIG = {
    "nc": 2,
    "depth_multiple": 1.0,
    "width_multiple": 1.0,
    "anchors": [[10, 13, 16, 30], [30, 61, 62, 45]],
    "backbone": [
        [-1, 1, "Conv", [8, 3, 2, "None", 1, "nn.LeakyReLU(0.1)"]],  # 0  /2
        [-1, 1, "Conv", [16, 3, 2]],  # 1  /4
        [-1, 2, "Bottleneck", [16]],  # 2  /4, two stacked copies
        [-1, 1, "MP", []],  # 3  /8
        [-1, 1, "RepConv", [16, 3, 1]],  # 4  /8
        [-1, 1, "nn.MaxPool2d", [2, 2]],  # 5  /16
    ],
    "head": [
        [-1, 1, "SPPF", [32, 5]],  # 6  /16
        [-1, 1, "nn.Upsample", ["None", 2, "nearest"]],  # 7  /8
        [[-1, 4], 1, "Concat", [1]],  # 8  /8
        [[8, 6], 1, "Detect", ["nc", "anchors"]],  # 9
    ],
}


def test_list_architectures_names_the_shipped_configs():
    expected = {"yolov7", "yolov7-tiny", "yolov7x", "yolov7-w6", "yolov7-e6"}
    expected |= {f"yolov5{size}" for size in "nsmlx"}
    assert set(list_architectures()) == expected


@pytest.mark.parametrize("name", sorted(OFFICIAL_FUSED_PARAMETERS))
def test_fused_parameter_count_matches_official(name):
    model = build_model(name).fuse()
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_FUSED_PARAMETERS[name]


@pytest.mark.parametrize("name", ["yolov7-w6", "yolov7-e6", "yolov5m", "yolov5l", "yolov5x"])
def test_other_architectures_build_with_p5_or_p6_strides(name):
    model = build_model(name)
    expected = [8.0, 16.0, 32.0, 64.0] if name.endswith("6") else [8.0, 16.0, 32.0]
    assert model.stride.tolist() == expected
    assert model.model[-1].i == len(model.model) - 1


def test_official_layer_names_and_attributes():
    v7 = build_model("yolov7")
    names = dict(v7.named_modules())
    assert isinstance(names["model.105"], IDetect)
    assert {"model.105.m.0", "model.105.m.2", "model.105.ia.0", "model.105.im.2"} <= set(names)
    assert {"model.0.conv", "model.0.bn", "model.0.act", "model.51.cv1.conv"} <= set(names)
    assert "model.102.rbr_dense.0" in names
    head = v7.model[-1]
    assert (head.i, head.f, head.type) == (105, [102, 103, 104], "IDetect")
    assert head.np == sum(p.numel() for p in head.parameters())
    assert v7.names == [f"class{i}" for i in range(80)] and v7.nc == 80

    v5 = build_model("yolov5s")
    names = dict(v5.named_modules())
    assert {"model.24.m.2", "model.2.m.0.cv1.conv", "model.9.cv2.bn"} <= set(names)
    assert isinstance(names["model.2.m.0"], Bottleneck)
    assert isinstance(names["model.2.m.0.add"], Add)
    assert names["model.13.m.0"].add is None  # shortcut=False in the head
    assert "model.24.anchor_grid" not in v5.state_dict()  # YOLOv5 v7.0 layout
    assert "model.105.anchor_grid" in v7.state_dict()  # YOLOv7 layout


def test_eval_and_train_outputs():
    model = build_model("yolov7-tiny", nc=3).eval()
    x = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        predictions, raw = model(x)
    cells = sum(96 // s * 128 // s for s in (8, 16, 32))
    assert predictions.shape == (2, 3 * cells, 8)
    assert [r.shape for r in raw] == [(2, 3, 96 // s, 128 // s, 8) for s in (8, 16, 32)]
    scores = predictions[..., 4:]
    assert scores.min() >= 0 and scores.max() <= 1
    centers = predictions[..., :2]
    assert centers.min() > -64 and centers[..., 0].max() < 128 + 64
    model.train()
    raw_train = model(x)
    assert isinstance(raw_train, list) and [r.shape for r in raw_train] == [r.shape for r in raw]


def test_aux_head_returns_extra_levels_only_in_train_mode():
    config = yaml.safe_load(yaml.safe_dump(TINY_CONFIG))
    config["head"][-1] = [[8, 6, 8, 6], 1, "IAuxDetect", ["nc", "anchors"]]
    model = build_model(config)
    assert isinstance(model.model[-1], IAuxDetect)
    x = torch.rand(1, 3, 64, 64)
    assert len(model.train()(x)) == 4
    with torch.no_grad():
        predictions, raw = model.eval()(x)
    assert len(raw) == 2 and predictions.shape == (1, 2 * (8 * 8 + 4 * 4), 7)


def test_build_from_custom_yaml_path(tmp_path):
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(TINY_CONFIG))
    model = load_model(path)
    assert model.stride.tolist() == [8.0, 16.0]
    assert isinstance(model.model[2], torch.nn.Sequential) and len(model.model[2]) == 2
    assert "model.2.1.cv2.conv.weight" in model.state_dict()
    assert model.model[-1].anchor_grid_buffer is True  # RepConv/MP make it a YOLOv7 config
    with torch.no_grad():
        predictions, _ = model.eval()(torch.rand(1, 3, 64, 64))
    assert predictions.shape == (1, 2 * (8 * 8 + 4 * 4), 7)


def test_bad_configs_raise_clear_errors(tmp_path):
    with pytest.raises(YoloqError, match="unknown architecture|neither"):
        load_model("yolov9-huge")
    config = yaml.safe_load(yaml.safe_dump(TINY_CONFIG))
    config["backbone"][1][2] = "Focus"
    with pytest.raises(YoloqError, match="unknown module 'Focus'"):
        build_model(config)
    path = tmp_path / "broken.yaml"
    path.write_text("nc: 3\nbackbone: [")
    with pytest.raises(YoloqError, match="broken.yaml"):
        build_model(path)
