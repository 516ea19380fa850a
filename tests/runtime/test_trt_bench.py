"""The benchmark's timing logic with a fake clock, the per-layer profile format, and how
an engine's shape range is met; none of it needs a GPU. The real engine runs carry the
tensorrt marker."""

import json

import pytest
import torch

from trt_standins import StandInTensorRT10
from yoloq.errors import YoloqError
from yoloq.runtime.tensorrt.bench import latency_stats, profile_records, summarize, timed_runs
from yoloq.runtime.tensorrt.engine import ShapeRange, run_in_profile, torch_dtype
from yoloq.runtime.tensorrt.inspector import attach_profile, parse_layer_information, parse_profile


class FakeClock:
    """A clock that only moves when a run takes time."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def steps_of(clock: FakeClock, ms: float):
    def step() -> float:
        clock.now += ms / 1000
        return ms

    return step


def test_timed_runs_warm_up_then_run_for_the_duration():
    clock = FakeClock()
    runs = timed_runs(steps_of(clock, 2.0), warmup_s=0.01, duration_s=0.1, clock=clock)
    assert runs.warmup_runs == 5
    assert len(runs.latencies_ms) == 50 and runs.wall_s == pytest.approx(0.1)
    result = summarize("m.engine", 4, runs, cuda_graph=True)
    assert result.qps == pytest.approx(500) and result.images_per_s == pytest.approx(2000)
    assert result.latency_ms["median"] == pytest.approx(2.0)


def test_timed_runs_keep_a_minimum_of_runs_and_check_their_arguments():
    clock = FakeClock()
    runs = timed_runs(steps_of(clock, 50.0), warmup_s=0, duration_s=0.01, clock=clock, min_runs=10)
    assert runs.warmup_runs == 0 and len(runs.latencies_ms) == 10
    with pytest.raises(YoloqError, match="duration"):
        timed_runs(steps_of(clock, 1.0), warmup_s=1, duration_s=0)


def test_latency_percentiles():
    stats = latency_stats([float(v) for v in range(1, 101)])
    assert stats["median"] == pytest.approx(50.5) and stats["p90"] == pytest.approx(90.1)
    assert stats["p99"] == pytest.approx(99.01) and (stats["min"], stats["max"]) == (1, 100)
    assert stats["mean"] == pytest.approx(50.5)


def test_profile_records_have_trtexecs_format_and_read_back():
    times = {"conv1 + relu": [0.2, 0.4, 0.3], "Reformatting CopyNode for Output": [0.1] * 3}
    records = profile_records(times, count=3)
    assert records[0] == {"count": 3}
    first = records[1]
    assert set(first) == {"name", "timeMs", "averageMs", "medianMs", "percentage"}
    assert first["timeMs"] == pytest.approx(0.9) and first["averageMs"] == pytest.approx(0.3)
    assert first["medianMs"] == pytest.approx(0.3)
    assert sum(r["percentage"] for r in records[1:]) == pytest.approx(100)
    parsed, count = parse_profile(json.loads(json.dumps(records)))
    assert count == 3 and parsed == [
        ("conv1 + relu", pytest.approx(0.3)),
        ("Reformatting CopyNode for Output", pytest.approx(0.1)),
    ]
    layers = [{"Name": name, "LayerType": "x", "Inputs": [], "Outputs": []} for name in times]
    graph = attach_profile(parse_layer_information({"Layers": layers}), parsed, count)
    assert [layer.time_ms for layer in graph.layers] == [pytest.approx(0.3), pytest.approx(0.1)]


class RecordingRun:
    """Stands in for an engine: each output row is the sum of its image, so rows can be
    traced back to inputs; records every shape it was given."""

    def __init__(self):
        self.shapes = []

    def __call__(self, images):
        self.shapes.append(tuple(images.shape))
        return images.sum(dim=(1, 2, 3)).reshape(-1, 1, 1)


def test_run_in_profile_splits_fills_and_pads_to_the_engine_shapes():
    shapes = ShapeRange(low=(2, 3, 64, 64), opt=(4, 3, 96, 96), high=(4, 3, 96, 96))
    images = torch.arange(5, dtype=torch.float32).reshape(5, 1, 1, 1).expand(5, 3, 48, 64)
    run = RecordingRun()
    out = run_in_profile(run, images.contiguous(), shapes, pad_value=0.0)
    # 5 images: batches of 4 and 1 (filled to 2); height 48 padded to 64, width kept.
    assert run.shapes == [(4, 3, 64, 64), (2, 3, 64, 64)]
    expected = torch.arange(5, dtype=torch.float32) * 3 * 48 * 64
    torch.testing.assert_close(out.flatten(), expected)
    with pytest.raises(YoloqError, match="exceed the engine's largest input 96x96"):
        run_in_profile(run, torch.zeros(1, 3, 128, 64), shapes)


def test_tensorrt_types_map_to_torch():
    trt = StandInTensorRT10()
    assert torch_dtype(trt.DataType.HALF) == torch.float16
    assert torch_dtype(trt.DataType.FLOAT) == torch.float32
    assert torch_dtype(trt.DataType.INT8) == torch.int8


@pytest.mark.tensorrt
def test_real_engine_matches_onnx_runtime_and_times(tmp_path):
    """On a GPU with TensorRT: build a tiny FP16 engine, run it, time it, profile it."""
    from tiny_onnx import conv_net, export

    from yoloq.runtime import OrtModel
    from yoloq.runtime.tensorrt import BuildSettings, benchmark_engine, build_engine
    from yoloq.runtime.tensorrt.engine import EngineRunner

    onnx_path = export(
        conv_net(16),
        tmp_path / "tiny.onnx",
        torch.zeros(1, 3, 64, 64),
        {"images": {0: "batch"}, "output": {0: "batch"}},
    )
    result = build_engine(onnx_path, tmp_path / "tiny.engine", BuildSettings(batch=(1, 2, 4)))
    images = torch.rand(3, 3, 64, 64)
    actual = EngineRunner(result.engine)(images).cpu()
    expected = OrtModel(onnx_path, providers=["CPUExecutionProvider"])(images)
    torch.testing.assert_close(actual, expected, atol=0.05, rtol=0.05)  # FP16 layers
    bench = benchmark_engine(result.engine, 2, 0.2, 0.5, profile_path=tmp_path / "p.json")
    assert bench.qps > 0 and bench.runs >= 10
    assert json.loads((tmp_path / "p.json").read_text())[0]["count"] > 0


@pytest.mark.gpu
def test_runner_cuda_graph_and_profile_on_the_gpu(tmp_path):
    """The CUDA side of running and timing an engine (buffers, streams, graph capture and
    replay, event timing, the profiler), with a stand-in engine that computes 2x + 1."""
    from trt_standins import ENGINE_BYTES
    from yoloq.runtime.tensorrt.api import describe
    from yoloq.runtime.tensorrt.bench import benchmark_engine
    from yoloq.runtime.tensorrt.engine import EngineRunner

    engine = tmp_path / "m.engine"
    engine.write_bytes(ENGINE_BYTES)
    api = describe(StandInTensorRT10())
    runner = EngineRunner(engine, "cuda", api)
    assert runner.shapes == ShapeRange((1, 3, 32, 32), (2, 3, 64, 64), (4, 3, 64, 64))
    images = torch.rand(3, 3, 48, 64)
    torch.testing.assert_close(runner(images).cpu(), images * 2 + 1)
    result = benchmark_engine(
        engine, 2, 0.05, 0.2, profile_path=tmp_path / "p.json", profile_runs=5, tensorrt=api
    )
    assert result.cuda_graph and result.runs >= 10 and result.qps > 0
    assert runner.buffers["output"].shape == (3, 3, 48, 64)
    profile = json.loads((tmp_path / "p.json").read_text())
    assert profile[0] == {"count": 5} and profile[1]["averageMs"] == pytest.approx(0.01)
