"""The one face of every backend: a Predictor to run, a Backend to load and time models.

A Predictor takes a float [B, 3, H, W] batch (RGB, 0..1) and returns raw
predictions [B, anchors, 5 + nc] (xywh in input pixels, sigmoid scores), which is
what evaluation, prediction and benchmarks consume.

A Backend (ONNX Runtime, TensorRT, ...) is registered by name in
`yoloq.runtime.backends`; adding one is one file with a Backend subclass and one
registry line. Its four verbs:

- `prepare(job, target)`: the file it runs, made from an exported ONNX (ONNX Runtime
  runs the ONNX itself; TensorRT builds an engine);
- `load(path, device)`: a Predictor;
- `bench(paths, batch_sizes, img_size, **options)`: latency per model and batch, as a
  BenchResult;
- `unavailable()`: why it cannot run here (None when it can); `check()` raises that.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from yoloq.errors import YoloqError
from yoloq.runtime.bench import BenchResult

DEFAULT_IMG_SIZE = 640


@dataclass
class Predictor:
    run: Callable[[torch.Tensor], torch.Tensor]
    names: list[str]
    img_size: int
    stride: int
    description: str
    backend: str  # a registered backend's name, or "torch"
    precision: str  # "fp32" | "fp16" | "int8"
    profile: str | None = None
    model: torch.nn.Module | None = None  # the torch model, when there is one

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.run(images)


def export_metadata(path: Path) -> dict[str, str]:
    """The metadata of a yoloq ONNX export; a YoloqError where it has no class names."""
    from yoloq.export import read_metadata  # export knows no runtime; this reads its files

    meta = read_metadata(path)
    if "names" not in meta:
        raise YoloqError(f"{path}: no class names in its metadata; export it with yoloq")
    return meta


def exported_predictor(run: Callable[[torch.Tensor], torch.Tensor], meta: dict[str, str],
                       path: Path, backend: str) -> Predictor:
    """A Predictor of an exported model run by `run`, described by its metadata."""
    profile = meta.get("profile") or None
    return Predictor(run, json.loads(meta["names"]), int(meta.get("img_size", DEFAULT_IMG_SIZE)),
                     int(meta.get("stride", 32)), str(path), backend,
                     meta.get("precision", "int8" if profile else "fp32"), profile)


@dataclass(frozen=True)
class DeployJob:
    """One exported model to run on a backend, and what its report row says of it."""

    name: str  # file stem: float, ptq_trt, qat_trt
    model: torch.nn.Module | None  # the torch model it was exported from
    onnx: Path  # the FP32 export, already written
    quantized: bool
    profile: str | None = None
    notes: str = ""


@dataclass(frozen=True)
class DeployTarget:
    """Where and for which inputs a backend prepares its files."""

    out: Path
    names: tuple[str, ...]
    img_size: int
    stride: int
    batch: int  # the evaluation batch size
    bench_batches: tuple[int, ...]
    opset: int = 13


class Backend:
    """A runtime for exported models. Subclasses set the class attributes and override
    `load` and `bench` (and `prepare` / `unavailable` where they differ)."""

    name: str = ""
    suffixes: tuple[str, ...] = ()  # files it runs when no backend is named
    device: str = "cpu"  # where its predictors run by default
    float_precision: str = "fp32"  # the precision of its float baseline
    latency_decimals: int = 2  # of the medians in report rows

    def unavailable(self) -> str | None:
        return None

    def check(self) -> None:
        """Raise, naming what is missing, where this backend cannot run."""
        reason = self.unavailable()
        if reason is not None:
            raise YoloqError(reason)

    def prepare(self, job: DeployJob, target: DeployTarget) -> Path:
        return job.onnx

    def precision(self, job: DeployJob) -> str:
        return "int8" if job.quantized else self.float_precision

    def load(self, path: Path, device: str | None = None) -> Predictor:
        raise NotImplementedError(f"{type(self).__name__}.load")

    def bench(self, paths: Sequence[Path], batch_sizes: Sequence[int],
              img_size: int | None = None, **options) -> BenchResult:
        """Latency of every model at every batch size. `options` (warmup, iters, threads,
        ...) are hints: a backend takes those it knows and ignores the others."""
        raise NotImplementedError(f"{type(self).__name__}.bench")
