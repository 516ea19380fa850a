"""Latency and throughput of ONNX models in ONNX Runtime (CPU), measured fairly.

Timings on a shared CPU drift by +-20% from one run to the next, so models are
never timed one after the other: every iteration runs each model once, in an
order that rotates, and only the ratios of models measured together mean much.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from rich.console import Console
from rich.table import Table

from yoloq.console import progress
from yoloq.errors import YoloqError

IMAGE_INPUT = "images"  # the input name of yoloq's (and YOLOv7's) exports
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


@dataclass(frozen=True)
class BenchStats:
    """One model at one batch size; latencies in milliseconds."""

    model: str
    batch: int
    median_ms: float
    p90_ms: float
    images_per_s: float  # batch / median
    ratio: float | None  # median / the first model's median (None with one model)
    latencies_ms: tuple[float, ...] = ()
    note: str = ""  # what else the backend measured, for the report (TensorRT: "812 qps")


@dataclass(frozen=True)
class BenchResult:
    """Every model at every batch size, measured interleaved in one process."""

    models: tuple[str, ...]
    stats: tuple[BenchStats, ...]
    settings: dict = field(default_factory=dict)

    def get(self, model: str | Path, batch: int) -> BenchStats:
        """The stats of `model` (as given to `benchmark_onnx`) at `batch`."""
        for stats in self.stats:
            if stats.model == str(model) and stats.batch == batch:
                return stats
        raise KeyError(f"no result for {model} at batch {batch}")

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class Runner:
    """One model to time, on any backend: `run(batch)` runs it once on an input of that
    batch size, prepared beforehand (an ONNX Runtime session, an OpenVINO request...)."""

    name: str
    run: Callable[[int], object]


def time_runners(runners: Sequence[Runner], batch_sizes: Sequence[int], warmup: int,
                 iters: int, show_progress: bool = True,
                 settings: dict | None = None) -> BenchResult:
    """Every runner at every batch size, interleaved in this process: the ratios of each to
    the first are fair even across backends (ONNX Runtime next to OpenVINO)."""
    if not runners:
        raise YoloqError("nothing to time: no model given")
    if warmup < 0 or iters < 1 or any(batch < 1 for batch in batch_sizes):
        raise YoloqError(f"warmup {warmup} must be >= 0, iters {iters} and batch sizes "
                         f"{list(batch_sizes)} >= 1")  # fmt: skip
    latencies = {}
    for batch in batch_sizes:
        latencies.update(_time_interleaved(runners, batch, warmup, iters, show_progress))
    settings = {"batch_sizes": list(batch_sizes), "warmup": warmup, "iters": iters,
                **(settings or {})}
    names = [runner.name for runner in runners]
    return BenchResult(models=tuple(names), stats=_summarise(latencies, names, batch_sizes),
                       settings=settings)


def random_images(batch_sizes: Sequence[int], channels: int, height: int, width: int,
                  dtype=np.float32, seed: int = 0) -> dict[int, np.ndarray]:
    """One random [batch, C, H, W] input per batch size, the same for every backend."""
    rng = np.random.default_rng(seed)
    return {batch: rng.random((batch, channels, height, width), dtype=np.float32).astype(dtype)
            for batch in batch_sizes}


def benchmark_onnx(
    paths: Sequence[str | Path],
    batch_sizes: Sequence[int] = (1, 8),
    warmup: int = 10,
    iters: int = 50,
    threads: int | None = None,
    img_size: int | None = None,
    show_progress: bool = True,
) -> BenchResult:
    """Median and p90 latency, and throughput, of each ONNX model per batch size.

    The models run interleaved (A, B, B, A, ...) in this process on the CPU, so that
    the ratio of each model to the first (median / median) is a fair comparison.
    `img_size` is the input's height and width where the ONNX leaves them dynamic.

    Example:
        result = benchmark_onnx(["float.onnx", "int8.onnx"], batch_sizes=(1,))
        result.get("int8.onnx", 1).ratio  # < 1: faster than float
    """
    if not paths:
        raise YoloqError("benchmark_onnx: no model given")
    for path in map(Path, paths):  # every file checked before any is loaded
        if not path.is_file():
            raise YoloqError(f"{path}: no such ONNX model")
    runners = [onnx_runner(Path(path), batch_sizes, threads, img_size) for path in paths]
    return time_runners(runners, batch_sizes, warmup, iters, show_progress,
                        {"threads": threads, "img_size": img_size,
                         "provider": "CPUExecutionProvider", "onnxruntime": ort.__version__})


def _open_session(path: Path, threads: int | None):
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    # A session's idle threads spin for a while after each run; interleaved, they
    # would steal the cores from the next model and bias the comparison.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ONNX Runtime's exception types are not public
        raise YoloqError(f"{path}: ONNX Runtime cannot load it ({error})") from None


def onnx_runner(path: Path, batch_sizes: Sequence[int], threads: int | None = None,
                img_size: int | None = None) -> Runner:
    """An ONNX Runtime CPU session of `path` with a random input per batch size."""
    session = _open_session(path, threads)
    inputs = {i.name: i for i in session.get_inputs()}
    image = inputs.get(IMAGE_INPUT) or session.get_inputs()[0]
    if len(inputs) != 1 or len(image.shape) != 4 or image.type not in _NUMPY_TYPES:
        found = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs.values())
        raise YoloqError(f"{path}: expected one float image input [batch, 3, H, W], "
                         f"found {found}")  # fmt: skip
    fixed_batch, channels, height, width = (d if isinstance(d, int) else None for d in image.shape)
    height, width = _spatial_size(path, height, width, img_size)
    for batch in batch_sizes:
        if fixed_batch is not None and batch != fixed_batch:
            raise YoloqError(f"{path}: the input's batch size is fixed at {fixed_batch}, "
                             f"cannot run batch {batch}")  # fmt: skip
    arrays = random_images(batch_sizes, channels or 3, height, width, _NUMPY_TYPES[image.type])
    return Runner(str(path), lambda batch: session.run(None, {image.name: arrays[batch]}))


def _spatial_size(path: Path, height: int | None, width: int | None,
                  img_size: int | None) -> tuple[int, int]:
    if (height is None or width is None) and img_size is None:
        raise YoloqError(f"{path}: the input's height and width are dynamic; give img_size "
                         "(--img)")
    return height or img_size, width or img_size


def _time_interleaved(runners: Sequence[Runner], batch: int, warmup: int, iters: int,
                      show_progress: bool):
    """{(model index, batch): [ms, ...]}: every model runs once per iteration, in an
    order that rotates (a model may be given twice, to see the noise: A vs A)."""
    for _ in range(warmup):
        for runner in runners:
            runner.run(batch)
    latencies = {(index, batch): [] for index in range(len(runners))}
    for step in progress(range(iters), f"batch {batch}", enabled=show_progress):
        # Rotate who goes first so that no model always runs on a cache warmed by another.
        order = list(range(len(runners)))
        shift = step % len(runners)
        for index in order[shift:] + order[:shift]:
            start = time.perf_counter()
            runners[index].run(batch)
            latencies[(index, batch)].append(1000 * (time.perf_counter() - start))
    return latencies


def _summarise(latencies, models: list[str], batch_sizes) -> tuple[BenchStats, ...]:
    stats = []
    for batch in batch_sizes:
        first_median = float(np.median(latencies[(0, batch)]))
        for index, model in enumerate(models):
            times = latencies[(index, batch)]
            median = float(np.median(times))
            stats.append(BenchStats(
                model=model, batch=batch, median_ms=median,
                p90_ms=float(np.percentile(times, 90)), images_per_s=1000 * batch / median,
                ratio=median / first_median if len(models) > 1 else None,
                latencies_ms=tuple(round(t, 4) for t in times),
            ))  # fmt: skip
    return tuple(stats)


def bench_table(result: BenchResult) -> Table:
    """The result as a rich table; with several models, the ratio to the first."""
    backend = result.settings.get("backend", "onnxruntime")
    titles = {"onnxruntime": "ONNX Runtime CPU latency", "openvino": "OpenVINO CPU latency"}
    table = Table(title=f"{titles.get(backend, backend)} (interleaved runs)")
    columns = ["model", "batch", "median ms", "p90 ms", "images/s"]
    if len(result.models) > 1:
        columns.append(f"ratio to {Path(result.models[0]).name}")
    notes = any(stats.note for stats in result.stats)
    if notes:
        columns.append("note")
    for column in columns:  # the note is what wraps on a narrow terminal
        table.add_column(column, justify="left" if column in ("model", "note") else "right",
                         no_wrap=column != "note")
    for stats in result.stats:
        cells = [Path(stats.model).name, str(stats.batch), f"{stats.median_ms:.2f}",
                 f"{stats.p90_ms:.2f}", f"{stats.images_per_s:.1f}"]  # fmt: skip
        if stats.ratio is not None:
            cells.append(f"{stats.ratio:.2f}x")
        if notes:
            cells.append(stats.note)
        table.add_row(*cells)
    return table


def print_bench_result(result: BenchResult, console: Console | None = None) -> None:
    """Print the table and how it was measured."""
    console = console or Console()
    console.print(bench_table(result))
    settings = result.settings
    console.print(f"{settings.get('iters')} timed runs per model and batch after "
                  f"{settings.get('warmup')} warm-up runs; threads "
                  f"{settings.get('threads') or 'default'}"
                  + (f"; OpenVINO {settings['openvino']}, float layers in "
                     f"{settings['precision_hint']}" if "precision_hint" in settings else ""))
