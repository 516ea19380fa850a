"""Throughput and latency of a TensorRT engine, as `trtexec --useCudaGraph
--noDataTransfers` measures them, and a per-layer profile.

The timed loop replays a CUDA graph of one inference on inputs already on the GPU
(no host transfers), times each replay with CUDA events, and runs for a set
duration after a warm-up. The timing logic (`timed_runs`, `latency_stats`,
`profile_records`) is plain Python, tested with a fake clock.

The per-layer profile is taken in a separate run without the graph (TensorRT's
profiler times each layer of an ordinary execution) and written in the format of
`trtexec --exportProfile`: [{"count": N}, {"name", "timeMs", "averageMs",
"medianMs", "percentage"}, ...].
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from yoloq.errors import YoloqError
from yoloq.runtime.tensorrt.engine import EngineRunner

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class TimedRuns:
    """The latencies of the timed runs (ms), and the wall time they took together (s)."""

    latencies_ms: tuple[float, ...]
    wall_s: float
    warmup_runs: int


def timed_runs(
    step: Callable[[], float],
    warmup_s: float,
    duration_s: float,
    clock: Callable[[], float] = time.perf_counter,
    min_runs: int = 10,
) -> TimedRuns:
    """Run `step` (one inference, returning its latency in ms) for `warmup_s` untimed,
    then for `duration_s` and at least `min_runs` times."""
    if warmup_s < 0 or duration_s <= 0:
        raise YoloqError(f"warm-up {warmup_s} s must be >= 0 and duration {duration_s} s > 0")
    start, warmup = clock(), 0
    while clock() - start < warmup_s:
        step()
        warmup += 1
    latencies, start = [], clock()
    while clock() - start < duration_s or len(latencies) < min_runs:
        latencies.append(float(step()))
    return TimedRuns(tuple(latencies), clock() - start, warmup)


def latency_stats(latencies_ms) -> dict[str, float]:
    """mean, min, max and the median, p90, p95 and p99 of the latencies (ms)."""
    values = np.asarray(latencies_ms, dtype=np.float64)
    if values.size == 0:
        raise YoloqError("no timed runs")
    stats = {"mean": float(values.mean()), "min": float(values.min()), "max": float(values.max())}
    for q in PERCENTILES:
        stats["median" if q == 50 else f"p{q}"] = float(np.percentile(values, q))
    return stats


@dataclass(frozen=True)
class EngineBench:
    """One engine at one batch size."""

    engine: str
    batch: int
    qps: float  # inferences (batches) per second
    images_per_s: float
    latency_ms: dict[str, float]
    runs: int
    cuda_graph: bool
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(
    engine: str, batch: int, runs: TimedRuns, cuda_graph: bool, **settings
) -> EngineBench:
    """Throughput over the wall time of the timed loop, latency percentiles per run."""
    qps = len(runs.latencies_ms) / runs.wall_s if runs.wall_s > 0 else float("nan")
    return EngineBench(
        engine=engine,
        batch=batch,
        qps=qps,
        images_per_s=qps * batch,
        latency_ms=latency_stats(runs.latencies_ms),
        runs=len(runs.latencies_ms),
        cuda_graph=cuda_graph,
        settings={"warmup_runs": runs.warmup_runs, "wall_s": runs.wall_s, **settings},
    )


def profile_records(times: dict[str, list[float]], count: int) -> list[dict]:
    """Per-layer times (ms, one entry per run, layers in execution order) in the format of
    `trtexec --exportProfile`."""
    if count <= 0:
        raise YoloqError("a profile needs at least one run")
    total = sum(sum(values) for values in times.values())
    records: list[dict] = [{"count": count}]
    for name, values in times.items():
        spent = float(sum(values))
        records.append(
            {
                "name": name,
                "timeMs": spent,
                "averageMs": spent / count,
                "medianMs": float(np.median(values)),
                "percentage": 100 * spent / total if total > 0 else 0.0,
            }
        )
    return records


# --- on the GPU ---------------------------------------------------------------------------


def benchmark_engine(
    path: str | Path,
    batch: int = 1,
    warmup_s: float = 1.0,
    duration_s: float = 3.0,
    cuda_graph: bool = True,
    profile_path: str | Path | None = None,
    profile_runs: int = 50,
    tensorrt=None,
) -> EngineBench:
    """Time `path` at `batch` on random input at the engine's tuned height and width;
    with `profile_path`, also write its per-layer profile there."""
    runner = EngineRunner(path, "cuda", tensorrt)
    shape = (batch, *runner.shapes.opt[1:])
    low, high = runner.shapes.low[0], runner.shapes.high[0]
    if not low <= batch <= high:
        raise YoloqError(f"{path} runs batches {low}..{high}, not {batch}")
    runner.bind(torch.rand(shape, device=runner.device))
    launch, used_graph = _launcher(runner, cuda_graph)
    step = _event_timed(launch, runner.stream)
    runs = timed_runs(step, warmup_s, duration_s)
    result = summarize(
        str(path),
        batch,
        runs,
        used_graph,
        warmup_s=warmup_s,
        duration_s=duration_s,
        shape=list(shape),
        tensorrt=runner.api.version_text,
    )
    if profile_path is not None:
        records = layer_profile(runner, profile_runs)
        Path(profile_path).write_text(json.dumps(records, indent=2) + "\n")
    return result


def _launcher(runner, cuda_graph: bool):
    """(a function that enqueues one inference, whether it replays a CUDA graph)."""
    runner.execute()  # the first enqueue after a shape change does setup work
    runner.stream.synchronize()
    if not cuda_graph:
        return runner.execute, False
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph, stream=runner.stream):
            runner.execute()
    except RuntimeError as error:  # e.g. layers whose shapes depend on the data
        print(f"CUDA graph capture failed ({error}); timing ordinary executions")
        return runner.execute, False

    def replay():
        with torch.cuda.stream(runner.stream):
            graph.replay()

    return replay, True


def _event_timed(launch: Callable[[], None], stream) -> Callable[[], float]:
    """One inference between two CUDA events on `stream`; returns its GPU time (ms)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def step() -> float:
        start.record(stream)
        launch()
        end.record(stream)
        end.synchronize()
        return start.elapsed_time(end)

    return step


def layer_profile(runner, runs: int) -> list[dict]:
    """Run the engine `runs` times with TensorRT's profiler; the records of each layer."""
    times: dict[str, list[float]] = defaultdict(list)

    class LayerTimes(runner.api.module.IProfiler):
        def report_layer_time(self, layer_name, ms):
            times[layer_name].append(ms)

    profiler = LayerTimes()
    runner.context.profiler = profiler
    for _ in range(runs):
        runner.execute()
        runner.stream.synchronize()
    return profile_records(times, runs)
