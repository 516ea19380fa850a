"""Post-training quantization of a YOLO detector, end to end.

load -> fuse -> insert quantizers (head kept float unless quantize_head) -> calibrate ->
evaluate float and INT8 on the same report images, with paired intervals -> save `ptq.pt`
-> export ONNX -> evaluate and time it in ONNX Runtime (and, with --trt, as TensorRT
engines) against the float export -> report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from yoloq.evaluate import EvalResult
from yoloq.quant import CalibrationRun
from yoloq.report import Report
from yoloq.runtime.bench import BenchResult
from yoloq.workflows.config import PtqConfig, check_output_dir, read_ignore_file
from yoloq.workflows.steps import (
    deploy,
    deploy_backends,
    evaluate_model,
    export_jobs,
    export_pair,
    prepare,
    quantize_and_calibrate,
    save_checkpoint,
    torch_row,
    with_intervals,
)

__all__ = ["PtqConfig", "PtqResult", "read_ignore_file", "run_ptq"]


@dataclass
class PtqResult:
    out: Path
    float_eval: EvalResult
    ptq_eval: EvalResult
    onnx_eval: EvalResult
    calibration: CalibrationRun
    checkpoint: Path
    onnx: Path
    float_onnx: Path
    float_onnx_eval: EvalResult | None = None
    latency: BenchResult | None = None  # ONNX Runtime, float and INT8 interleaved
    report: Report | None = None
    tensorrt_rows: list = field(default_factory=list)  # with --trt: FP16 and INT8 engines


def run_ptq(config: PtqConfig, exist_ok: bool = False) -> PtqResult:
    """The whole PTQ workflow; writes config.yaml, ptq.pt, the ONNX files and the report."""
    out = Path(config.out)
    check_output_dir(out, exist_ok)
    backends = deploy_backends(config.trt)  # before long work
    space = prepare(config)
    model, summary, quant_config, run = quantize_and_calibrate(space, config)
    float_eval = evaluate_model(space.float_model, space, config.device)
    ptq_eval = evaluate_model(model, space, config.device)
    out.mkdir(parents=True, exist_ok=True)
    config.save(out)
    (out / "quantization.txt").write_text(str(summary))
    checkpoint = save_checkpoint(model, out / "ptq.pt", config, quant_config, space, run)
    onnx_path, float_onnx = export_pair(model, space, config, out, f"ptq_{config.profile}")
    jobs = export_jobs(space.float_model, float_onnx, model, onnx_path, config.profile)
    runs = [deploy(backend, jobs, space, out, config.batch, config.bench_batches, config.opset)
            for backend in backends]
    onnx_run = runs[0]
    result = PtqResult(out, float_eval, ptq_eval, onnx_run.evals[1], run, checkpoint, onnx_path,
                       float_onnx, onnx_run.evals[0], onnx_run.bench,
                       tensorrt_rows=[row for other in runs[1:] for row in other.rows])
    weights = Path(config.weights).name
    torch_rows, paired = with_intervals(
        [torch_row(weights, float_eval), torch_row(weights, ptq_eval, config.profile)],
        [float_eval, ptq_eval], space.names)
    rows = [*torch_rows, *(row for deployment in runs for row in deployment.rows)]
    for deployment in runs:
        paired.update(deployment.paired)
    result.report = Report(rows=rows, config=config.to_dict(), splits=space.splits,
                           paired=paired)
    result.report.save(out)
    return result
