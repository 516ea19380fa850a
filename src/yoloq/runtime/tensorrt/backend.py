"""The TensorRT backend: engines built from yoloq's exports, run and timed on the GPU.

The ONNX an engine is built from depends on the installed TensorRT: TensorRT 10
builds the FP32 exports with BuilderFlag FP16 (and INT8); TensorRT 11 needs the float
parts in FP16 in the ONNX, so an FP16 export is written for it (NAME_fp16.onnx).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from yoloq.console import console
from yoloq.errors import YoloqError
from yoloq.export import detector_metadata, export_detector
from yoloq.runtime.bench import BenchResult, BenchStats
from yoloq.runtime.predictor import DEFAULT_IMG_SIZE, Backend, DeployJob, DeployTarget, Predictor
from yoloq.runtime.tensorrt.api import TensorRT, load_tensorrt, tensorrt_status
from yoloq.runtime.tensorrt.bench import benchmark_engine
from yoloq.runtime.tensorrt.build import BuildSettings, build_engine
from yoloq.runtime.tensorrt.engine import EngineRunner, read_engine_metadata, run_in_profile

BENCH_WARMUP_S, BENCH_DURATION_S = 1.0, 3.0


class TensorRTBackend(Backend):
    """`api`: a TensorRT description (`describe(module)`) to use instead of the installed
    one (tests use stand-ins); None loads TensorRT on first use."""

    name = "tensorrt"
    suffixes = (".engine", ".plan")
    device = "cuda"
    float_precision = "fp16"  # TensorRT's float baseline: FP16 engines
    latency_decimals = 3

    def __init__(self, api: TensorRT | None = None):
        self._api = api

    @property
    def api(self) -> TensorRT:
        if self._api is None:
            self._api = load_tensorrt()
        return self._api

    def unavailable(self) -> str | None:
        return None if self._api is not None else tensorrt_status()

    def check(self) -> None:
        self.api  # noqa: B018 - raises TensorRTUnavailable, which names what is missing

    def prepare(self, job: DeployJob, target: DeployTarget) -> Path:
        """An engine for the val loader's rectangular batches (dynamic height and width)
        and the timed batch sizes, tuned for the first of those."""
        console.rule(f"[bold]TensorRT {self.api.version_text}: {job.name} "
                     f"({self.precision(job)})")
        onnx_path = self._onnx_for(job, target)
        bench_batches = target.bench_batches
        largest = max(target.batch, *bench_batches) if bench_batches else target.batch
        opt = bench_batches[0] if bench_batches else 1
        settings = BuildSettings(batch=(1, opt, largest), dynamic=True, img_size=target.img_size)
        engine = target.out / f"{job.name}.engine"
        result = build_engine(onnx_path, engine, settings, tensorrt=self.api)
        console.print(f"built {engine.name} in {result.seconds:.0f} s ({result.typing})")
        return result.engine

    def _onnx_for(self, job: DeployJob, target: DeployTarget) -> Path:
        """The job's FP32 ONNX for TensorRT 10; an FP16 export of its model for TensorRT 11."""
        if self.api.float_type == "fp32":
            return job.onnx
        metadata = detector_metadata(target.names, target.img_size, target.stride,
                                     self.precision(job), job.profile)
        return export_detector(job.model, target.out / f"{job.name}_fp16.onnx", target.img_size,
                               target.opset, dynamic=True, metadata=metadata, fp16=True)

    def load(self, path: Path, device: str | None = None) -> Predictor:
        path = Path(path)
        if not path.is_file():
            raise YoloqError(f"TensorRT engine not found: {path}")
        meta = read_engine_metadata(path)
        device = device if device and device.startswith("cuda") else "cuda"
        runner = EngineRunner(path, device, self._api)

        def run(images: torch.Tensor) -> torch.Tensor:
            return run_in_profile(runner, images, runner.shapes)

        return Predictor(run, list(meta["names"]), int(meta.get("img_size") or DEFAULT_IMG_SIZE),
                         int(meta.get("stride") or 32), str(path), self.name,
                         meta.get("precision", "fp32"), meta.get("profile"))

    def bench(self, paths: Sequence[Path], batch_sizes: Sequence[int],
              img_size: int | None = None, **options) -> BenchResult:
        """Each engine at each batch size, with CUDA graphs; the first batch size also
        writes the engine's per-layer profile (NAME.profile.json)."""
        stats = []
        for path in map(Path, paths):
            for index, batch in enumerate(batch_sizes):
                profile = path.with_suffix(".profile.json") if index == 0 else None
                run = benchmark_engine(path, batch, options.get("warmup_s", BENCH_WARMUP_S),
                                       options.get("duration_s", BENCH_DURATION_S),
                                       profile_path=profile, tensorrt=self.api)
                median = run.latency_ms["median"]
                stats.append(BenchStats(str(path), batch, median, run.latency_ms.get("p90", median),
                                        run.images_per_s, None, note=f"{run.qps:.0f} qps"))
        settings = {"batch_sizes": list(batch_sizes), "warmup_s": BENCH_WARMUP_S,
                    "duration_s": BENCH_DURATION_S, "tensorrt": self.api.version_text}
        return BenchResult(tuple(map(str, paths)), tuple(stats), settings)
