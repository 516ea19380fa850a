import json
from collections import Counter

import onnx
import onnxruntime as ort
import pytest
import torch
import yaml

from yoloq.cli import main
from yoloq.models.quantized import load_quantized
from yoloq.quant import QuantMode, iter_quantizers
from yoloq.quant.modules import QuantConv2d
from yoloq.runtime import get_backend
from yoloq.runtime.openvino import default_float_precision
from yoloq.workflows.ptq import PtqConfig, run_ptq


def ptq_config(tiny_yolo, tiny_data, out, **overrides):
    settings = dict(weights=str(tiny_yolo), data=str(tiny_data), out=str(out), calib_images=8,
                    batch=4, workers=0, bench_batches=(1,))
    return PtqConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def trt_run(tiny_yolo, tiny_data, tmp_path_factory):
    return run_ptq(ptq_config(tiny_yolo, tiny_data, tmp_path_factory.mktemp("ptq") / "trt"))


@pytest.fixture(scope="module")
def ort_run(tiny_yolo, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ptq") / "ort"
    return run_ptq(ptq_config(tiny_yolo, tiny_data, out, profile="ort", weight_bits=7))


def test_ptq_writes_every_output(trt_run):
    names = {path.name for path in trt_run.out.iterdir()}
    assert {"config.yaml", "ptq.pt", "ptq_trt.onnx", "float.onnx", "report.json",
            "report.md", "quantization.txt"} <= names
    report = json.loads((trt_run.out / "report.json").read_text())
    backends = [(row["backend"], row["precision"]) for row in report["rows"]]
    openvino = [("openvino", default_float_precision()), ("openvino", "int8")] if (
        get_backend("openvino").unavailable() is None) else []  # rows where it is installed
    assert backends == [("torch", "fp32"), ("torch", "int8"), ("onnxruntime", "fp32"),
                        ("onnxruntime", "int8"), *openvino]
    assert all(row["map50_95"] is not None for row in report["rows"])
    assert set(report["rows"][3]["latency_ms"]) == {"1"}
    onnx.checker.check_model(str(trt_run.onnx))
    # The checkpoint is plain data.
    payload = torch.load(trt_run.checkpoint, weights_only=True)
    assert payload["profile"] == "trt" and payload["quant_config"]["ignore"]


def test_rerun_from_saved_config_is_identical(trt_run, tmp_path):
    saved = PtqConfig.load(trt_run.out / "config.yaml")
    again = run_ptq(PtqConfig.from_dict({**saved.to_dict(), "out": str(tmp_path / "again")}))
    first = torch.load(trt_run.checkpoint, weights_only=True)["state_dict"]
    second = torch.load(again.checkpoint, weights_only=True)["state_dict"]
    amax = [key for key in first if key.endswith(".amax")]
    assert amax and all(torch.equal(first[key], second[key]) for key in amax)


@pytest.mark.parametrize("run_name", ["trt_run", "ort_run"])
def test_load_quantized_round_trip_and_onnx_parity(run_name, request):
    run = request.getfixturevalue(run_name)
    model = load_quantized(run.checkpoint)
    images = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        expected = model(images)[0]
        again = load_quantized(run.checkpoint)(images)[0]
    assert torch.equal(expected, again)
    session = ort.InferenceSession(str(run.onnx), providers=["CPUExecutionProvider"])
    actual = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    # Scores are sigmoid outputs: a rounding flip upstream moves them far less than 0.01.
    assert (actual[..., 4:] - expected[..., 4:]).abs().max().item() < 0.01
    assert (actual[..., :4] - expected[..., :4]).abs().max().item() < 1.0  # pixels


def test_disabled_quantizers_survive_the_checkpoint(trt_run, tmp_path):
    from yoloq.models.quantized import save_quantized
    from yoloq.quant import QuantConfig

    payload = torch.load(trt_run.checkpoint, weights_only=True)
    model = load_quantized(trt_run.checkpoint)
    model.model[0].conv.input_quantizer.mode = QuantMode.DISABLED
    path = save_quantized(model, tmp_path / "q.pt", "trt",
                          QuantConfig.from_dict(payload["quant_config"]), 128)
    reloaded = dict(iter_quantizers(load_quantized(path)))
    assert reloaded["model.0.conv.input_quantizer"].mode == QuantMode.DISABLED


def test_ort_profile_fuses_every_quantized_conv(ort_run, tmp_path):
    model = load_quantized(ort_run.checkpoint)
    quantized_convs = sum(isinstance(m, QuantConv2d) for m in model.modules())
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(str(ort_run.onnx), options, providers=["CPUExecutionProvider"])
    ops = Counter(node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node)
    assert quantized_convs > 0 and ops["QLinearConv"] == quantized_convs
    assert ops["Conv"] + ops["FusedConv"] == 3  # the float detection head


def cli_error(argv, capsys) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_bad_inputs_fail_clearly_and_write_nothing(tiny_yolo, tiny_data, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["ptq", "--data", str(tiny_data), "--out", str(out), "--workers", "0"]
    assert "checkpoint not found: missing.pt" in cli_error(
        [*base, "--weights", "missing.pt"], capsys)
    no_val = tmp_path / "no_val.yaml"
    no_val.write_text(yaml.safe_dump({"path": str(tiny_data.parent), "train": "images/train",
                                      "names": ["a"] * 8}))
    assert "no 'val' split" in cli_error(
        ["ptq", "--weights", str(tiny_yolo), "--data", str(no_val), "--out", str(out)], capsys)
    assert "not a valid regex" in cli_error(
        [*base, "--weights", str(tiny_yolo), "--ignore", "model.(("], capsys)
    with pytest.raises(SystemExit) as error:
        main([*base, "--weights", str(tiny_yolo), "--method", "minmax"])
    assert error.value.code == 2 and "invalid choice: 'minmax'" in capsys.readouterr().err
    assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert "is not empty" in cli_error([*base, "--weights", str(tiny_yolo)], capsys)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_export_refuses_the_other_profile(ort_run, tmp_path, capsys):
    message = cli_error(["export", "--weights", str(ort_run.checkpoint), "--profile", "trt",
                         "--out", str(tmp_path / "x.onnx")], capsys)
    assert "calibrated for the ort profile" in message and not (tmp_path / "x.onnx").exists()


def test_ignore_file_and_unused_pattern_warning(tiny_yolo, tiny_data, tmp_path):
    ignore_file = tmp_path / "ignore.txt"
    ignore_file.write_text("# keep the stem float\nmodel\\.0\\.\n")
    from yoloq.workflows.ptq import read_ignore_file

    config = ptq_config(tiny_yolo, tiny_data, tmp_path / "run",
                        ignore=(*read_ignore_file(ignore_file), r"model\.999\."))
    with pytest.warns(UserWarning, match="matches no quantizable module"):
        run = run_ptq(config)
    text = (run.out / "quantization.txt").read_text()
    assert "model\\.0\\." in text
    model = load_quantized(run.checkpoint)
    assert not isinstance(model.model[0].conv, QuantConv2d)


def test_adaround_and_bias_correction_export_the_weights_they_chose(tiny_yolo, tiny_data,
                                                                     tmp_path, ort_run,
                                                                     monkeypatch):
    """Learned rounding and bias correction change weights and biases only: the same Q/DQ
    graph as plain PTQ, the tuned checkpoint reloads to the same outputs, and ONNX
    Runtime computes what torch does with it."""
    import functools

    import yoloq.workflows.steps
    from yoloq.quant.weight_tuning import RoundingSettings, learn_rounding

    short = functools.partial(learn_rounding, settings=RoundingSettings(iterations=20))
    monkeypatch.setattr(yoloq.workflows.steps, "learn_rounding", short)  # the test's time
    run = run_ptq(ptq_config(tiny_yolo, tiny_data, tmp_path / "tuned", profile="ort",
                             weight_bits=7, adaround=True, bias_correction=True,
                             bench_batches=()))
    plain, tuned = (torch.load(r.checkpoint, weights_only=True)["state_dict"]
                    for r in (ort_run, run))
    weights = [key for key in plain if key.endswith("conv.weight")]
    assert sum(not torch.equal(plain[k], tuned[k]) for k in weights) > len(weights) // 2
    model = load_quantized(run.checkpoint)
    for _, module in model.named_modules():
        if isinstance(module, QuantConv2d):  # the learned weights lie on their grid
            assert torch.equal(module.weight_quantizer(module.weight), module.weight)

    def op_types(path):  # (not the Identity nodes torch's export makes of equal constants)
        return Counter(node.op_type for node in onnx.load(str(path)).graph.node
                       if node.op_type != "Identity")

    assert op_types(run.onnx) == op_types(ort_run.onnx)
    images = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        expected = model(images)[0]
    session = ort.InferenceSession(str(run.onnx), providers=["CPUExecutionProvider"])
    actual = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    assert (actual[..., 4:] - expected[..., 4:]).abs().max().item() < 0.01
