"""`yoloq demo`: every stage yoloq has, run for real on built-in data.

Today: a random-weight CNN with the three structures that decide INT8
placement (a MaxPool, a Concat of two branches, a residual Add) is quantized,
calibrated, exported with Q/DQ and run in ONNX Runtime against torch.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import onnx
import torch
import torch.nn as nn
from rich.table import Table

from yoloq.console import console
from yoloq.export import export_onnx
from yoloq.quant import Add, Concat, QuantConfig, calibrate, quantize
from yoloq.quant.quantizer import iter_quantizers
from yoloq.runtime import OrtModel


class DemoCNN(nn.Module):
    """A small CNN: stem, MaxPool, two branches joined by Concat, a residual Add, a head."""

    def __init__(self, channels: int = 16, outputs: int = 8):
        super().__init__()
        c = channels
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, 2, 1), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.branch_a = nn.Sequential(nn.Conv2d(c, c, 1), nn.ReLU())
        self.branch_b = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.ReLU())
        self.concat = Concat(1)
        self.mix = nn.Sequential(nn.Conv2d(2 * c, 2 * c, 1), nn.ReLU())
        self.residual = nn.Sequential(nn.Conv2d(2 * c, 2 * c, 3, 1, 1), nn.ReLU())
        self.add = Add()
        self.head = nn.Conv2d(2 * c, outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stem(x))
        x = self.mix(self.concat([self.branch_a(x), self.branch_b(x)]))
        x = self.add(x, self.residual(x))
        return self.head(x)


def synthetic_batches(count: int, batch: int, size: int, seed: int) -> list[torch.Tensor]:
    """Smooth random images in [0, 1], the same for the same seed."""
    generator = torch.Generator().manual_seed(seed)
    low = torch.rand(count * batch, 3, size // 8, size // 8, generator=generator)
    images = nn.functional.interpolate(low, size=(size, size), mode="bilinear")
    return list(images.split(batch))


def run_demo(out_dir: str | Path | None = None, seed: int = 0, size: int = 224,
             method: str = "mse") -> dict:
    """Run the demo, print its tables, and return the measured figures."""
    if out_dir is None:
        with tempfile.TemporaryDirectory(prefix="yoloq-demo-") as folder:
            return run_demo(folder, seed, size, method)
    out_dir = Path(out_dir)
    results: dict = {}
    steps: list[tuple[str, Callable[[dict], None]]] = [
        ("quantize", _step_quantize),
        ("calibrate", lambda r: _step_calibrate(r, seed, size, method)),
        ("export", lambda r: _step_export(r, out_dir, size)),
        ("onnxruntime", lambda r: _step_onnxruntime(r, seed, size)),
    ]
    for name, step in steps:
        console.rule(f"[bold]{name}")
        step(results)
    console.print(_results_table(results))
    return {key: value for key, value in results.items() if not key.startswith("_")}


def _step_quantize(results: dict) -> None:
    torch.manual_seed(0)
    model = DemoCNN().eval()
    results["_float_model"] = DemoCNN().eval()
    results["_float_model"].load_state_dict(model.state_dict())
    model, summary = quantize(model, QuantConfig())
    console.print(summary.table())
    results["_model"] = model
    results["modules_quantized"] = len(summary.quantized)
    results["quantizers"] = sum(1 for _ in iter_quantizers(model))


def _step_calibrate(results: dict, seed: int, size: int, method: str) -> None:
    batches = synthetic_batches(count=8, batch=4, size=size, seed=seed)
    run = calibrate(results["_model"], batches, method=method)
    console.print(f"{method} calibration: {run.batches} batches, {run.images} images, "
                  f"{run.quantizers} quantizers, {run.seconds:.2f} s")
    results["calibration_method"] = method
    results["calibration_seconds"] = run.seconds


def _step_export(results: dict, out_dir: Path, size: int) -> None:
    path = export_onnx(results["_model"], out_dir / "demo_int8.onnx", torch.rand(1, 3, size, size))
    graph = onnx.load(str(path)).graph
    counts = {op: sum(node.op_type == op for node in graph.node)
              for op in ("QuantizeLinear", "DequantizeLinear", "Conv")}
    console.print(f"exported {path} ({path.stat().st_size / 1024:.0f} KiB): {counts}")
    results["_onnx_path"] = path
    results["onnx_qdq_pairs"] = counts["QuantizeLinear"]


def _step_onnxruntime(results: dict, seed: int, size: int) -> None:
    images = synthetic_batches(count=1, batch=4, size=size, seed=seed + 1)[0]
    with torch.no_grad():
        torch_int8 = results["_model"](images)
        torch_float = results["_float_model"](images)
    ort_int8 = OrtModel(results["_onnx_path"])(images)
    output_step = torch_int8.abs().max().item() / 127
    results["ort_vs_torch_max_error"] = (ort_int8 - torch_int8).abs().max().item()
    results["ort_vs_torch_steps"] = results["ort_vs_torch_max_error"] / output_step
    results["int8_vs_float_relative_error"] = (
        (torch_int8 - torch_float).norm() / torch_float.norm()
    ).item()


def _results_table(results: dict) -> Table:
    table = Table(title="yoloq demo")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("modules quantized", str(results["modules_quantized"]))
    table.add_row("quantizers inserted", str(results["quantizers"]))
    table.add_row(f"calibration ({results['calibration_method']})",
                  f"{results['calibration_seconds']:.2f} s")
    table.add_row("Q/DQ pairs in ONNX", str(results["onnx_qdq_pairs"]))
    table.add_row("ONNX Runtime vs torch INT8, max |error|",
                  f"{results['ort_vs_torch_max_error']:.2e} "
                  f"({results['ort_vs_torch_steps']:.2f} output steps)")
    table.add_row("torch INT8 vs float, relative error",
                  f"{100 * results['int8_vs_float_relative_error']:.2f} %")
    return table
