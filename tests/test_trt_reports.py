"""`--trt` on ptq and qat: the clear error before any long work where TensorRT is missing,
and the report rows (FP16 engine vs INT8 engine) from the engine plumbing, measured by
stand-ins here (the real engines carry the tensorrt marker)."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from trt_standins import StandInTensorRT10
from yoloq.cli import main
from yoloq.errors import YoloqError
from yoloq.report import Report, table_cells
from yoloq.runtime.predictor import DeployJob
from yoloq.runtime.tensorrt.api import describe
from yoloq.runtime.tensorrt.backend import TensorRTBackend
from yoloq.runtime.tensorrt.bench import EngineBench
from yoloq.workflows.config import PtqConfig, QatConfig
from yoloq.workflows.steps import deploy


@pytest.mark.parametrize("command", ["ptq", "qat"])
def test_trt_runs_fail_early_without_tensorrt(no_tensorrt, command, tmp_path, capsys):
    out = tmp_path / "run"
    # The data does not exist: the TensorRT check comes before anything reads it.
    code = main(
        [
            command,
            "--weights",
            "demo",
            "--data",
            str(tmp_path / "missing.yaml"),
            "--trt",
            "--out",
            str(out),
        ]
    )
    error = capsys.readouterr().err
    assert code == 2 and "yoloq[tensorrt]" in error and "NVIDIA GPU" in error
    assert not out.exists()


def test_trt_needs_the_trt_profile():
    with pytest.raises(YoloqError, match="use the trt profile"):
        PtqConfig(weights="demo", data="demo", profile="ort", weight_bits=7, trt=True)
    with pytest.raises(YoloqError, match="use the trt profile"):
        QatConfig(weights="demo", data="demo", profile="ort", trt=True)
    assert PtqConfig.from_dict(PtqConfig(weights="demo", data="demo", trt=True).to_dict()).trt


def test_engine_rows_build_evaluate_and_time_each_engine(tmp_path, monkeypatch):
    built, timed = [], []

    def build_engine(onnx_path, out, settings, tensorrt):
        built.append((Path(onnx_path).name, Path(out).name, settings.batch, settings.dynamic))
        return SimpleNamespace(engine=Path(out), seconds=1.0, typing="weakly typed")

    def benchmark_engine(path, batch, warmup_s, duration_s, profile_path, tensorrt):
        timed.append((Path(path).name, batch, profile_path and Path(profile_path).name))
        median = 2.0 if "float" in str(path) else 1.0
        return EngineBench(
            str(path),
            batch,
            1000 / median,
            1000 * batch / median,
            {"median": median * batch},
            100,
            True,
        )

    maps = {"float.engine": 0.45, "ptq_trt.engine": 0.448}
    monkeypatch.setattr("yoloq.runtime.tensorrt.backend.build_engine", build_engine)
    monkeypatch.setattr("yoloq.runtime.tensorrt.backend.benchmark_engine", benchmark_engine)
    monkeypatch.setattr(
        "yoloq.workflows.steps.evaluate_predictor",
        lambda name, space, device: SimpleNamespace(map50_95=maps[name], map50=0.6),
    )
    backend = TensorRTBackend(describe(StandInTensorRT10()))
    monkeypatch.setattr(backend, "load", lambda path, device: path.name)
    space = SimpleNamespace(img_size=320, names=["a"], stride=32)
    jobs = [
        DeployJob("float", None, tmp_path / "float.onnx", quantized=False),
        DeployJob("ptq_trt", None, tmp_path / "ptq_trt.onnx", True, "trt"),
    ]
    rows = deploy(backend, jobs, space, tmp_path, 8, (1, 8), 13).rows
    # TensorRT 10 builds the FP32 exports (BuilderFlag FP16 does the rest); dynamic shapes
    # for the rectangular val batches; tuned for the first timed batch size.
    assert built == [
        ("float.onnx", "float.engine", (1, 1, 8), True),
        ("ptq_trt.onnx", "ptq_trt.engine", (1, 1, 8), True),
    ]
    assert timed[:2] == [("float.engine", 1, "float.profile.json"), ("float.engine", 8, None)]
    assert [(r.backend, r.precision, r.profile) for r in rows] == [
        ("tensorrt", "fp16", None),
        ("tensorrt", "int8", "trt"),
    ]
    assert rows[1].latency_ms == {"1": 1.0, "8": 8.0}
    assert rows[1].notes == "1000 qps b1, 1000 qps b8"
    headers, cells = table_cells(Report(rows=rows))
    drop = cells[1][headers.index("drop")]
    assert drop == "0.20"  # against the FP16 engine, TensorRT's float baseline
