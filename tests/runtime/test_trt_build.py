"""Engine builds against stand-ins of TensorRT 10 and 11: the version decides the typing
and the precision flags; profiles, timing cache and outputs are the same for both."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trt_standins import ENGINE_BYTES, StandInTensorRT10, StandInTensorRT11
from yoloq.errors import YoloqError
from yoloq.runtime.tensorrt import BuildSettings, build_engine, load_engine_graph
from yoloq.runtime.tensorrt.api import describe
from yoloq.runtime.tensorrt.build import profile_shapes, read_onnx_facts

NAMES = ["ellipse", "star"]


def tiny_onnx(
    path, *, qdq=False, dtype=TensorProto.FLOAT, shape=("batch", 3, "h", "w"), img_size=64
):
    """images -> [Q -> DQ ->] Conv -> output, with yoloq's metadata."""
    np_type = helper.tensor_dtype_to_np_dtype(dtype)
    weight = numpy_helper.from_array(np.ones((8, 3, 1, 1), np_type), "conv.weight")
    nodes, source, inits = [], "images", [weight]
    if qdq:
        inits.append(numpy_helper.from_array(np.array(0.02, np_type), "scale"))
        nodes += [
            helper.make_node("QuantizeLinear", ["images", "scale"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "scale"], ["dq"]),
        ]
        source = "dq"
    nodes.append(helper.make_node("Conv", [source, "conv.weight"], ["output"]))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", dtype, list(shape))],
        [helper.make_tensor_value_info("output", dtype, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    helper.set_model_props(
        model,
        {
            "names": json.dumps(NAMES),
            "img_size": str(img_size),
            "stride": "32",
            "precision": "int8" if qdq else "fp32",
            "profile": "trt" if qdq else "",
        },
    )
    onnx.save(model, str(path))
    return path


def build(tmp_path, module, onnx_path, **settings):
    return build_engine(
        onnx_path, tmp_path / "model.engine", BuildSettings(**settings), tensorrt=describe(module)
    )


def test_tensorrt_11_builds_strongly_typed_and_sets_no_precision_flag(tmp_path):
    trt = StandInTensorRT11()
    assert not hasattr(trt.BuilderFlag, "FP16") and not hasattr(trt.BuilderFlag, "INT8")
    onnx_path = tiny_onnx(tmp_path / "m.onnx", qdq=True, dtype=TensorProto.FLOAT16)
    result = build(tmp_path, trt, onnx_path)
    strongly_typed = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert trt.record.network_flags == [strongly_typed]
    assert trt.record.builder_flags == []
    assert "strongly typed" in result.typing
    meta = json.loads(result.metadata.read_text())
    assert meta["precision"] == "int8" and meta["onnx_float_type"] == "fp16"


def test_tensorrt_11_warns_that_an_fp32_onnx_runs_in_fp32(tmp_path):
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    with pytest.warns(UserWarning, match="yoloq export --fp16"):
        result = build(tmp_path, StandInTensorRT11(), onnx_path)
    assert json.loads(result.metadata.read_text())["precision"] == "fp32"


@pytest.mark.parametrize("qdq, flags", [(True, ["FP16", "INT8"]), (False, ["FP16"])])
def test_tensorrt_10_sets_fp16_and_int8_on_a_weakly_typed_network(tmp_path, qdq, flags):
    trt = StandInTensorRT10()
    result = build(tmp_path, trt, tiny_onnx(tmp_path / "m.onnx", qdq=qdq))
    assert trt.record.network_flags == [0]
    assert [flag.name for flag in trt.record.builder_flags] == flags
    assert "weakly typed" in result.typing
    assert json.loads(result.metadata.read_text())["precision"] == ("int8" if qdq else "fp16")


@pytest.mark.parametrize("standin", [StandInTensorRT10, StandInTensorRT11])
def test_both_versions_share_workspace_verbosity_profile_and_outputs(tmp_path, standin):
    trt = standin()
    dtype = TensorProto.FLOAT16 if standin is StandInTensorRT11 else TensorProto.FLOAT
    onnx_path = tiny_onnx(tmp_path / "m.onnx", qdq=True, dtype=dtype)
    result = build(tmp_path, trt, onnx_path, batch=(1, 8, 16), dynamic=True, workspace_mb=512)
    assert trt.record.memory_pools == {trt.MemoryPoolType.WORKSPACE: 512 << 20}
    assert trt.record.verbosity == trt.ProfilingVerbosity.DETAILED
    assert trt.record.inspected_shape == (8, 3, 64, 64)  # formats need a concrete shape
    assert trt.record.profiles == [("images", (1, 3, 32, 32), (8, 3, 64, 64), (16, 3, 64, 64))]
    assert result.shapes == {"min": [1, 3, 32, 32], "opt": [8, 3, 64, 64], "max": [16, 3, 64, 64]}
    assert result.engine.read_bytes() == ENGINE_BYTES
    assert result.layers == tmp_path / "model.layers.json"
    graph = load_engine_graph(result.layers)  # the inspector's JSON, as written
    assert graph.inputs == ["images"] and graph.outputs == ["output"]
    meta = json.loads((tmp_path / "model.engine.json").read_text())
    assert meta["names"] == NAMES and meta["img_size"] == 64 and meta["input"] == "images"
    assert meta["tensorrt"] == ".".join(trt.__version__.split(".")) and meta["shapes"]


def test_timing_cache_is_saved_and_reused_by_the_next_build(tmp_path):
    trt = StandInTensorRT10()
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    first = build(tmp_path, trt, onnx_path)
    assert first.timing_cache == tmp_path / "timing.cache"
    assert first.timing_cache.read_bytes() == b"+timings"
    build(tmp_path, trt, onnx_path)
    assert trt.record.timing_cache_in == [b"", b"+timings"]


def test_parser_and_builder_failures_are_reported(tmp_path):
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    with pytest.raises(YoloqError, match="ONNX parser failed: .*unsupported op"):
        build(tmp_path, StandInTensorRT10(parse_ok=False), onnx_path)
    with pytest.raises(YoloqError, match="could not build"):
        build(tmp_path, StandInTensorRT10(build_ok=False), onnx_path)
    assert not (tmp_path / "model.engine").exists()


def test_profile_shapes_follow_the_onnx_and_the_settings(tmp_path):
    dynamic = read_onnx_facts(tiny_onnx(tmp_path / "d.onnx", img_size=640))
    assert profile_shapes(dynamic, BuildSettings()) == ((1, 3, 640, 640),) * 3
    assert profile_shapes(dynamic, BuildSettings(img_size=320, batch=(2, 2, 4))) == (
        (2, 3, 320, 320),
        (2, 3, 320, 320),
        (4, 3, 320, 320),
    )
    fixed = read_onnx_facts(tiny_onnx(tmp_path / "f.onnx", shape=(1, 3, 64, 64)))
    assert profile_shapes(fixed, BuildSettings()) is None
    with pytest.raises(YoloqError, match="fixed at 1: export it with --dynamic"):
        profile_shapes(fixed, BuildSettings(batch=(1, 4, 8)))
    batch_only = read_onnx_facts(tiny_onnx(tmp_path / "b.onnx", shape=("batch", 3, 64, 64)))
    with pytest.raises(YoloqError, match="height and width are fixed"):
        profile_shapes(batch_only, BuildSettings(dynamic=True))
    with pytest.raises(YoloqError, match="1 <= min <= opt <= max"):
        BuildSettings(batch=(4, 2, 8))


def test_build_checks_its_arguments_before_tensorrt_loads(tmp_path, monkeypatch):
    def no_tensorrt():
        raise AssertionError("TensorRT loaded before the arguments were checked")

    monkeypatch.setattr("yoloq.runtime.tensorrt.build.load_tensorrt", no_tensorrt)
    with pytest.raises(YoloqError, match="ONNX model not found"):
        build_engine(tmp_path / "missing.onnx")
    fixed = tiny_onnx(tmp_path / "f.onnx", shape=(1, 3, 64, 64))
    with pytest.raises(YoloqError, match="fixed at 1"):
        build_engine(fixed, settings=BuildSettings(batch=(1, 1, 4)))


def test_cli_build_with_a_stand_in(tmp_path, monkeypatch, capsys):
    from yoloq.cli import main

    trt = StandInTensorRT10()
    monkeypatch.setattr("yoloq.cli.trt.load_tensorrt", lambda: describe(trt))
    onnx_path = tiny_onnx(tmp_path / "m.onnx", qdq=True)
    assert main(["trt", "build", str(onnx_path), "--dynamic", "--workspace", "256"]) == 0
    printed = capsys.readouterr().out
    assert "weakly typed: BuilderFlag FP16 + INT8" in printed
    assert "input shapes: min [1, 3, 32, 32], opt [1, 3, 64, 64], max [16, 3, 64, 64]" in printed
    assert "1 reformat layer (1 standalone Q/DQ)" in printed
    assert {p.name for p in tmp_path.iterdir()} >= {
        "m.engine",
        "m.layers.json",
        "m.engine.json",
        "timing.cache",
    }
