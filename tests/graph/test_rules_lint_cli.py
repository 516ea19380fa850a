"""`yoloq rules` and `yoloq lint` on the command line."""

from __future__ import annotations

import json

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
