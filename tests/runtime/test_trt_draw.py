"""Reading TensorRT's layer and profile JSON (8.6 to 11), summarising and drawing it.

Real TensorRT outputs: the INT8 QAT MobileNet engines in ../shared/fixtures/tensorrt
(or $YOLOQ_TRT_FIXTURES); those tests skip where the folder is absent. The newer
formats are checked on JSON written here in the shapes TensorRT's documentation gives.
"""

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from trt_standins import LAYERS_10, LAYERS_11
from yoloq.cli import main
from yoloq.errors import YoloqError
from yoloq.runtime.tensorrt import draw_engine, load_engine_graph, summarize
from yoloq.runtime.tensorrt.inspector import parse_layer_information
from yoloq.runtime.tensorrt.layers import dtype_of, short_format

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("YOLOQ_TRT_FIXTURES", REPO.parent / "shared/fixtures/tensorrt"))
SVG = "{http://www.w3.org/2000/svg}"


def fixture(model: str, kind: str) -> Path:
    path = FIXTURES / f"{model}.qat.onnx.engine.{kind}.json"
    if not path.is_file():
        pytest.skip(f"TensorRT fixtures not found in {FIXTURES}")
    return path


@pytest.fixture(scope="module")
def mobilenet():
    return load_engine_graph(fixture("mobilenet", "graph"), fixture("mobilenet", "profile"))


@pytest.fixture(scope="module")
def residuals():
    name = "mobilenet_v2_residuals"
    return load_engine_graph(fixture(name, "graph"), fixture(name, "profile"))


def test_real_engine_layers_precisions_and_reformats(mobilenet):
    summary = summarize(mobilenet)
    assert mobilenet.inputs == ["input1"] and mobilenet.outputs == ["1179"]
    assert summary.layers == 73
    assert summary.by_precision == {"int8": 53, "fp16": 15, "fp32": 5}
    # 17 standalone QuantizeLinear layers TensorRT could not fuse, and one layout copy.
    assert (summary.reformats, summary.reformats_from_qdq) == (18, 17)
    conv = mobilenet.layers[1]
    assert conv.kind == "CaskConvolution" and conv.fused and conv.precision == "int8"
    assert conv.parts[-1] == "PWN(Clip_16)"
    assert conv.inputs[0].layout == "NC/4HW4" and conv.outputs[0].layout == "NC/32HW32"


def test_real_profile_times_every_layer(mobilenet):
    summary = summarize(mobilenet)
    profile = json.loads(fixture("mobilenet", "profile").read_text())
    assert mobilenet.profile_runs == profile[0]["count"] and not mobilenet.unmatched_profile
    assert all(layer.time_ms is not None for layer in mobilenet.layers)
    assert summary.total_ms == pytest.approx(sum(r["averageMs"] for r in profile[1:]))
    reformat_ms = sum(layer.time_ms for layer in mobilenet.layers if layer.is_reformat)
    assert summary.reformat_ms == pytest.approx(reformat_ms)
    assert 0.1 < summary.reformat_ms / summary.total_ms < 0.25
    assert summary.slowest[0][1] == max(layer.time_ms for layer in mobilenet.layers)


def test_residual_placement_leaves_fewer_reformats(mobilenet, residuals):
    """The same network with Q/DQ on the residual branches: TensorRT fuses the adds."""
    summary = summarize(residuals)
    assert (summary.reformats, summary.reformats_from_qdq) == (3, 2)
    assert summary.reformat_ms < summarize(mobilenet).reformat_ms
    assert summary.by_precision["int8"] == 53


def test_a_profile_of_another_engine_shows_as_unmatched():
    graph = load_engine_graph(
        fixture("mobilenet", "graph"), fixture("mobilenet_v2_residuals", "profile")
    )
    assert graph.unmatched_profile


@pytest.mark.parametrize("suffix", [".svg", ".html"])
def test_drawing_of_a_real_engine(mobilenet, tmp_path, suffix):
    out = draw_engine(mobilenet, tmp_path / f"engine{suffix}", "mobilenet")
    text = out.read_text()
    svg = text if suffix == ".svg" else text[text.index("<svg") : text.index("</svg>") + 6]
    root = ET.fromstring(svg)
    boxes = [g for g in root.iter(f"{SVG}g") if g.find(f"{SVG}rect") is not None]
    assert len(boxes) == 73 + 2  # every layer, the engine input and output
    red = [g for g in boxes if g.find(f"{SVG}rect").get("stroke") == "#cc0000"]
    assert len(red) == 18
    texts = "".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "18 reformat layers (17 standalone Q/DQ)" in texts
    assert "Conv_12 + PWN(Clip_16)" in texts  # a fused layer, one box, titled by its ops
    if suffix == ".html":
        assert text.startswith("<!DOCTYPE html>") and "<h2>Reformat layers</h2>" in text
        assert "http" not in text.replace("http://www.w3.org/2000/svg", "")  # self-contained


def test_cli_draw_on_real_files(tmp_path, capsys):
    layers = fixture("mobilenet_v2_residuals", "graph")
    out = tmp_path / "residuals.html"
    assert (
        main(
            [
                "trt",
                "draw",
                "--layers",
                str(layers),
                "--profile",
                str(fixture("mobilenet_v2_residuals", "profile")),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "3 reformat layers (2 standalone Q/DQ)" in printed and out.is_file()


def test_tensorrt_10_format_with_metadata_and_profiles():
    data = json.loads(json.dumps(LAYERS_10))
    second_profile = [dict(layer, Name=f"{layer['Name']} [profile 1]") for layer in data["Layers"]]
    data["Layers"] += second_profile + [{"Name": "sync", "LayerType": "signal"}]
    graph = parse_layer_information(data)
    assert [layer.name for layer in graph.layers] == [
        "images_QuantizeLinear",
        "conv.weight + /conv/Conv",
    ]
    quantize, conv = graph.layers
    assert quantize.is_reformat and quantize.origin == "QDQ" and quantize.precision == "int8"
    assert conv.onnx_nodes == ("/conv/Conv", "/conv/QuantizeLinear")
    assert conv.precision == "fp32" and conv.inputs[0].layout == "NHWC4"
    assert graph.inputs == ["images"] and graph.outputs == ["output"]


def test_tensorrt_11_format_with_io_tensors_and_split_types(tmp_path):
    graph = parse_layer_information(LAYERS_11)
    (layer,) = graph.layers
    assert layer.kind == "kgen" and layer.precision == "fp16"
    assert layer.onnx_nodes == ("/conv/Conv", "/act/LeakyRelu") and layer.fused
    assert graph.inputs == ["images"] and graph.outputs == ["output"]
    assert "TensorRT 11" in graph.format
    svg = draw_engine(graph, tmp_path / "e.svg").read_text()
    ET.fromstring(svg)  # the 0x1f separator never reaches the XML


def test_layer_names_only_is_refused_with_the_fix():
    with pytest.raises(YoloqError, match="detailed profiling verbosity"):
        parse_layer_information({"Layers": ["conv1", "relu1"], "Bindings": ["x", "y"]})
    with pytest.raises(YoloqError, match="no 'Layers'"):
        parse_layer_information({"something": 1})


@pytest.mark.parametrize("text, dtype", [
    ("Thirty-two wide channel vectorized row major Int8 format", "int8"),
    ("Two wide channel vectorized row major FP16 format", "fp16"),
    ("Row major linear FP32", "fp32"), ("Half", "fp16"), ("Float", "fp32"),
    ("BFloat16", "bf16"), ("Row major linear UInt8 format", "uint8"), ("Int32", "int32"),
    ("Unknown format", "?"),
])  # fmt: skip
def test_types_from_tensorrts_format_strings(text, dtype):
    assert dtype_of(text) == dtype


def test_layouts_from_tensorrts_format_strings():
    assert short_format("Four wide channel vectorized row major Int8 format") == "NC/4HW4"
    assert short_format("Channel major FP16 format where channel % 8 == 0") == "NHWC8"
    assert short_format("Row major linear FP32") == "NCHW"
    assert short_format("Half") == ""
