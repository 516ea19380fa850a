"""The TensorRT rows of the ptq and qat reports (`--trt`): the float model as an FP16
engine next to yoloq's INT8 engine, each evaluated on the run's val images and timed.

The ONNX an engine is built from depends on the installed TensorRT: TensorRT 10 builds
the FP32 exports with BuilderFlag FP16 (and INT8); TensorRT 11 needs the float parts
in FP16 in the ONNX, so FP16 exports are written for it (NAME_fp16.onnx).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

from yoloq.console import console
from yoloq.errors import YoloqError

BENCH_WARMUP_S, BENCH_DURATION_S = 1.0, 3.0


@dataclass(frozen=True)
class EngineJob:
    """One engine to build and measure: its source model and ONNX, and its report row."""

    name: str  # file stem: float, ptq_trt, qat_trt
    model: nn.Module
    onnx: Path  # the FP32 export, already written
    precision: str  # "fp16" (the float baseline) | "int8"
    profile: str | None


def check_tensorrt_run(profile: str):
    """The installed TensorRT, checked before any long work; --trt needs the trt profile."""
    from yoloq.runtime.tensorrt.api import load_tensorrt

    if profile != "trt":
        raise YoloqError(
            f"--trt builds TensorRT engines, which need the trt profile, not {profile}"
        )
    return load_tensorrt()


def engine_rows(
    api,
    jobs: list[EngineJob],
    space,
    out: Path,
    batch: int,
    bench_batches: tuple[int, ...],
    opset: int,
) -> list:
    """Build, evaluate and time each job's engine; one report row per engine."""
    rows = []
    for job in jobs:
        console.rule(f"[bold]TensorRT {api.version_text}: {job.name} ({job.precision})")
        onnx_path = _onnx_for(api, job, space, out, opset)
        engine = _build(
            api, onnx_path, out / f"{job.name}.engine", space.img_size, batch, bench_batches
        )
        rows.append(_measure(api, job, engine, space, bench_batches, out))
    return rows


def _onnx_for(api, job: EngineJob, space, out: Path, opset: int) -> Path:
    """The job's FP32 ONNX for TensorRT 10; an FP16 export of its model for TensorRT 11."""
    from yoloq.export import detector_metadata, export_detector

    if api.float_type == "fp32":
        return job.onnx
    precision = "int8" if job.precision == "int8" else "fp16"
    metadata = detector_metadata(space.names, space.img_size, space.stride, precision, job.profile)
    return export_detector(
        job.model,
        out / f"{job.name}_fp16.onnx",
        space.img_size,
        opset,
        dynamic=True,
        metadata=metadata,
        fp16=True,
    )


def _build(
    api, onnx_path: Path, engine: Path, img_size: int, batch: int, bench_batches: tuple[int, ...]
) -> Path:
    """An engine for the val loader's rectangular batches (dynamic height and width) and
    the timed batch sizes, tuned for the first of those."""
    from yoloq.runtime.tensorrt import BuildSettings, build_engine

    largest = max(batch, *bench_batches) if bench_batches else batch
    opt = bench_batches[0] if bench_batches else 1
    settings = BuildSettings(batch=(1, opt, largest), dynamic=True, img_size=img_size)
    result = build_engine(onnx_path, engine, settings, tensorrt=api)
    console.print(f"built {engine.name} in {result.seconds:.0f} s ({result.typing})")
    return result.engine


def _measure(api, job: EngineJob, engine: Path, space, bench_batches, out: Path):
    from yoloq.ptq import evaluate_predictor
    from yoloq.report import ReportRow
    from yoloq.runtime.predictor import load_predictor
    from yoloq.runtime.tensorrt import benchmark_engine

    result = evaluate_predictor(load_predictor(engine, "cuda"), space, "cuda")
    latency, notes = {}, []
    for index, batch in enumerate(bench_batches):
        profile = out / f"{job.name}.profile.json" if index == 0 else None
        bench = benchmark_engine(
            engine, batch, BENCH_WARMUP_S, BENCH_DURATION_S, profile_path=profile, tensorrt=api
        )
        latency[str(batch)] = round(bench.latency_ms["median"], 3)
        notes.append(f"{bench.qps:.0f} qps b{batch}")
    return ReportRow(
        engine.name,
        "tensorrt",
        job.profile,
        job.precision,
        result.map50_95,
        result.map50,
        latency,
        notes=", ".join(notes),
    )


def tensorrt_skip_reason() -> str | None:
    """Why the demo cannot build engines here (one line), or None when it can."""
    from yoloq.runtime.tensorrt.api import tensorrt_status

    return tensorrt_status()
