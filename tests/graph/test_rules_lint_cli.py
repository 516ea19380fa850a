"""`yoloq rules` and `yoloq lint` on the command line."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from yoloq.cli import main


def test_rules_prints_each_tie_follower_first(capsys):
    assert main(["rules", "yolov7-tiny"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "model.3.conv match to model.2.conv" in lines
    assert "model.9.conv match to model.8.m" in lines
    assert lines[-1] == "20 groups, 37 ties"
    assert sum(" match to " in line for line in lines) == 37


def test_rules_json_lists_the_groups(capsys):
    assert main(["rules", "yolov5s", "--json"]) == 0
    groups = json.loads(capsys.readouterr().out)["groups"]
    assert len(groups) == 14
    assert {
        "leader": "model.2.m.0.cv1.conv.input_quantizer",
        "members": ["model.2.m.0.cv1.conv.input_quantizer", "model.2.m.0.add.input0_quantizer"],
    } in groups


def test_lint_reports_a_missing_file_as_a_user_error(tmp_path, capsys):
    assert main(["lint", str(tmp_path / "missing.onnx")]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One random YOLOv7-tiny at quarter width (cheap to build) saved three ways: a yoloq
    float checkpoint, a whole pickled model in half precision (how the official
    repositories save; read by the same restricted loader), and a calibrated trt ptq.pt."""
    from yoloq.models.native import save_float_checkpoint
    from yoloq.models.quantized import quantize_yolo, save_quantized
    from yoloq.models.registry import architecture_config
    from yoloq.models.yolo import Model
    from yoloq.quant import calibrate

    folder = tmp_path_factory.mktemp("rules_weights")
    cfg = architecture_config("yolov7-tiny")
    cfg["nc"], cfg["width_multiple"] = 3, 0.25
    torch.manual_seed(0)
    model = Model(cfg).eval()
    model.names = ["a", "b", "c"]
    float_pt = save_float_checkpoint(model, folder / "float.pt", img_size=64)
    official = folder / "official.pt"
    torch.save({"model": copy.deepcopy(model).half(), "epoch": -1}, official)
    quantized, _, config = quantize_yolo(model.fuse(), "trt")
    calibrate(quantized, [torch.rand(1, 3, 64, 64)], method="max", show_progress=False)
    ptq = save_quantized(quantized, folder / "ptq.pt", "trt", config, 64)
    return {"float": float_pt, "official": official, "ptq": ptq}


def yolov7_tiny_ties(lines: list[str]) -> bool:
    """The ties of any YOLOv7-tiny, whatever its width (pinned in the first test)."""
    return "model.3.conv match to model.2.conv" in lines and lines[-1] == "20 groups, 37 ties"


def test_rules_gives_the_same_ties_for_each_kind_of_checkpoint(checkpoints, capsys):
    outputs = {}
    for kind, path in checkpoints.items():
        assert main(["rules", str(path)]) == 0
        outputs[kind] = capsys.readouterr().out
    assert outputs["official"] == outputs["float"] == outputs["ptq"]
    assert yolov7_tiny_ties(outputs["float"].splitlines())


def test_rules_reads_the_demo_model(capsys):
    """The shipped demo detector is a trained YOLOv7-tiny at half width."""
    assert main(["rules", "demo"]) == 0
    assert yolov7_tiny_ties(capsys.readouterr().out.splitlines())
