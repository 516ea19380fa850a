"""Which TensorRT is here and what it asks of a build; the clear error where there is none."""


import pytest
import torch

from trt_standins import StandInTensorRT10, StandInTensorRT11
from yoloq.cli import main
from yoloq.runtime.tensorrt import api
from yoloq.runtime.tensorrt.api import TensorRTUnavailable, describe, load_tensorrt, parse_version
from yoloq.runtime.tensorrt.build import network_flags


def test_versions_parse_and_choose_the_typing():
    assert parse_version("10.9.0.34") == (10, 9, 0, 34)
    assert parse_version("11.0.0rc1") == (11, 0, 0)
    ten, eleven = describe(StandInTensorRT10()), describe(StandInTensorRT11())
    assert (ten.strongly_typed, ten.float_type) == (False, "fp32")
    assert (eleven.strongly_typed, eleven.float_type) == (True, "fp16")
    assert network_flags(ten) == 0
    assert network_flags(eleven) == 1 << int(
        eleven.module.NetworkDefinitionCreationFlag.STRONGLY_TYPED
    )


def test_tensorrt_older_than_10_is_refused():
    old = StandInTensorRT10()
    old.__version__ = "8.6.1"
    with pytest.raises(TensorRTUnavailable, match="8.6.1 is too old"):
        describe(old)


def test_missing_tensorrt_names_the_extra_and_the_gpu(no_tensorrt):
    with pytest.raises(TensorRTUnavailable) as error:
        load_tensorrt()
    message = str(error.value)
    assert "yoloq[tensorrt]" in message and "NVIDIA GPU" in message


def test_missing_gpu_is_said_clearly(monkeypatch):
    monkeypatch.setattr(api.importlib, "import_module", lambda name: StandInTensorRT11())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TensorRTUnavailable, match="no NVIDIA GPU"):
        load_tensorrt()
    assert "no NVIDIA GPU" in api.tensorrt_status()


@pytest.mark.parametrize(
    "command", [["trt", "build", "model.onnx"], ["trt", "bench", "model.engine"]]
)
def test_cli_without_tensorrt_says_what_is_needed(no_tensorrt, command, capsys, tmp_path):
    assert main([*command[:2], str(tmp_path / command[2])]) == 2
    error = capsys.readouterr().err
    assert "the `tensorrt` extra (pip install 'yoloq[tensorrt]')" in error
    assert "NVIDIA GPU" in error and "Traceback" not in error
    assert not list(tmp_path.iterdir())


def test_engines_load_through_the_predictor_with_clear_errors(no_tensorrt, tmp_path):
    from yoloq.errors import YoloqError
    from yoloq.runtime.backends import load_predictor

    engine = tmp_path / "m.engine"
    with pytest.raises(YoloqError, match="TensorRT engine not found"):
        load_predictor(engine)
    engine.write_bytes(b"plan")
    with pytest.raises(YoloqError, match=r"no m\.engine\.json beside it"):
        load_predictor(engine)
    (tmp_path / "m.engine.json").write_text('{"names": ["a"], "img_size": 64}')
    with pytest.raises(TensorRTUnavailable, match="NVIDIA GPU"):
        load_predictor(engine, "cpu")


def test_batch_ranges_parse_for_the_cli():
    import argparse

    from yoloq.cli.trt import batch_range

    assert batch_range("8") == (8, 8, 8) and batch_range("1,8,16") == (1, 8, 16)
    for bad in ("0", "8,1,16", "1,8", "a"):
        with pytest.raises(argparse.ArgumentTypeError):
            batch_range(bad)


def test_cli_draw_writes_beside_the_layers_by_default(tmp_path, capsys):
    import json

    from trt_standins import LAYERS_10

    layers = tmp_path / "m.layers.json"
    layers.write_text(json.dumps(LAYERS_10))
    assert main(["trt", "draw", "--layers", str(layers)]) == 0
    assert (tmp_path / "m.svg").is_file()
    assert "1 reformat layer (1 standalone Q/DQ)" in capsys.readouterr().out
