import json
import subprocess
import sys

import pytest

from yoloq.cli import main
from yoloq.workflows.demo_hard_case import HardCase


def test_help_lists_the_commands_in_pipeline_order(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    commands = ["data", "ptq", "export", "eval", "bench", "predict", "demo"]
    positions = [out.index(f"    {name} ") for name in commands]
    assert positions == sorted(positions)


def test_console_script_entry_point():
    result = subprocess.run([sys.executable, "-m", "yoloq", "--help"], capture_output=True,
                            text=True, check=True)
    assert "demo" in result.stdout


# --- random weights are said, on the terminal and in every report ------------------------


def test_an_architecture_name_warns_on_one_line_that_its_weights_are_random(tiny_yolo, capsys):
    from yoloq.models import load_model

    load_model("yolov7-tiny")
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "yolov7-tiny" in lines[0] and "RANDOM weights" in lines[0]
    assert captured.out == ""
    load_model(str(tiny_yolo))  # a checkpoint: trained weights, nothing to say
    assert capsys.readouterr().err == ""


def test_every_report_of_a_random_model_records_it(tmp_path):
    from yoloq.report import Report
    from yoloq.workflows.config import PtqConfig, QatConfig

    configs = {"ptq-name": (PtqConfig(weights="yolov7-tiny", data="d").to_dict(), True),
               "qat-yaml": (QatConfig(weights="models/custom.yaml", data="d").to_dict(), True),
               "ptq-checkpoint": (PtqConfig(weights="runs/yolov7.pt", data="d").to_dict(), False),
               "demo": ({"demo": {"weights": "demo"}}, False)}
    for name, (config, random) in configs.items():
        folder = Report(config=config).save(tmp_path / name)
        saved = json.loads((folder / "report.json").read_text())
        assert saved["random_weights"] is random, name
        assert ("RANDOM WEIGHTS" in (folder / "report.md").read_text()) is random, name
        assert Report.load(folder).random_weights is random, name


# --- lint and export say what they measured ----------------------------------------------


def test_lint_reports_its_own_errors_as_errors_not_as_an_unreadable_file(conv_onnx,
                                                                        monkeypatch):
    import yoloq.cli.lint

    def broken_lint(model):
        raise KeyError("a bug in the lint")

    monkeypatch.setattr(yoloq.cli.lint, "lint_onnx", broken_lint)
    with pytest.raises(KeyError, match="a bug in the lint"):  # a bug surfaces as one
        main(["lint", str(conv_onnx)])


def test_export_of_a_float_head_reports_pixels_and_absolute_scores(tiny_yolo, tmp_path,
                                                                   capsys):
    out = tmp_path / "float.onnx"
    assert main(["export", "--weights", str(tiny_yolo), "--float", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "float output" in printed and "px on boxes" in printed
    assert "on scores (absolute" in printed and "steps" not in printed


def test_a_quantized_output_is_measured_in_steps_of_its_grid(tmp_path):
    import torch
    from torch import nn

    from yoloq.cli.export import parity
    from yoloq.quant import QuantSpec
    from yoloq.quant.quantizer import TensorQuantizer
    from yoloq.runtime.predictor import Predictor
    from yoloq.workflows.steps import check_export

    class QuantizedOutput(nn.Module):  # [batch, anchors, 4 + 1 + 8] on a grid of 2/127
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 13, 3, padding=1)
            self.quantizer = TensorQuantizer(QuantSpec(calibrator="max"), "output_quantizer")
            self.quantizer.set_amax(2.0)

        def forward(self, images):
            return (self.quantizer(self.conv(images).flatten(2).transpose(1, 2)),)

    model = QuantizedOutput().eval()
    predictor = Predictor(lambda x: model(x)[0], [f"c{i}" for i in range(8)], 32, 8, "q",
                          "torch", "int8", "trt", model)
    with torch.no_grad():
        check = check_export(predictor, tmp_path / "q.onnx", 32)
    assert check["output"] == "quantized"
    assert check["grid_step"] == pytest.approx(2 / 127)
    assert check["max_error_steps"] == pytest.approx(check["max_abs_error"] / check["grid_step"])
    assert check["max_error_steps"] <= 1.0  # ONNX Runtime and torch round alike, within a step
    assert "quantized output (grid step 0.0157)" in parity(check)
    assert "steps of its grid" in parity(check)


# --- the demo prints no empty section --------------------------------------------------


def test_every_demo_section_has_content(tiny_yolo, tiny_data, tmp_path, monkeypatch, capsys):
    import yoloq.workflows.demo as demo

    # The proxy sensitivity (tested on its own) is most of the time; its section has the
    # PTQ lines besides.
    monkeypatch.setattr(demo, "_proxy_sensitivity", lambda *args, **kwargs: None)
    hard_case = HardCase(candidates=1, max_layers=1, proxy_batches=1, qat_epochs=1,
                         qat_iters=1)
    demo.run_demo(demo.DemoSettings(out=str(tmp_path / "demo"), data=str(tiny_data),
                                    weights=str(tiny_yolo), method="max", val_images=2,
                                    calib_images=2, bench_batches=(), workers=0,
                                    hard_case=hard_case))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    headers = [i for i, line in enumerate(lines) if line.startswith("─")]
    titles = [lines[i].strip("─ ") for i in headers]
    assert titles[:2] == ["data and model", "float model"] and "ONNX Runtime" in titles
    empty = [lines[i].strip("─ ") for i in headers if i + 1 in headers or i + 1 == len(lines)]
    assert not empty, f"sections without content: {empty}"
