"""`yoloq demo`: the whole workflow, for real, on the built-in benchmark.

The demo model (YOLOv7-tiny at half width, trained on yoloq's synthetic dataset)
is evaluated in float, quantized with histogram-MSE calibration for both
deployment profiles (trt and ort), exported with Q/DQ, evaluated in ONNX Runtime
next to the float export, and timed against it; where TensorRT and a GPU are
present, FP16 and INT8 engines are built, evaluated and timed too. Everything
lands in --out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from yoloq.console import console
from yoloq.ptq import (
    PtqConfig,
    bench_models,
    evaluate_onnx,
    evaluate_predictor,
    export_pair,
    latency_for,
    prepare,
    quantize_and_calibrate,
    save_checkpoint,
    torch_predict,
)


@dataclass(frozen=True)
class DemoSettings:
    out: str = "runs/demo"
    data: str = "demo"
    weights: str = "demo"
    method: str = "mse"
    calib_images: int = 256
    val_images: int | None = None  # None: the whole val split (500 images)
    bench_batches: tuple[int, ...] = (1, 8)
    workers: int = 2
    sensitivity_batches: int = 2
    qat: bool = False  # end with a short QAT step on the trt PTQ model
    qat_epochs: int = 2
    qat_iters: int = 20
    qat_lr_schedule: str = "0:1e-5"


# The two deployment profiles; the ort one with 7-bit weights, right for CPUs without VNNI.
PROFILE_SETTINGS = {"trt": {"profile": "trt"}, "ort": {"profile": "ort", "weight_bits": 7}}


def run_demo(settings: DemoSettings | None = None):
    """Run every stage on the built-in benchmark; print and return the report."""
    from yoloq.report import Report, ReportRow, plot_report, print_report

    settings = settings or DemoSettings()
    out = Path(settings.out)
    configs = {name: _ptq_config(settings, **extra) for name, extra in PROFILE_SETTINGS.items()}
    _stage("data and model")
    space = prepare(configs["trt"])
    out.mkdir(parents=True, exist_ok=True)
    console.print(f"{len(space.val_loader.dataset)} val images at {space.img_size} px, "
                  f"calibration on {configs['trt'].calib_images} training images")
    _stage("float model")
    float_eval = evaluate_predictor(torch_predict(space.float_model), space)
    rows = [ReportRow("demo", "torch", None, "fp32", float_eval.map50_95, float_eval.map50, {})]
    exports, onnx_evals, ptq_evals, models = {}, {}, {}, {}
    for name, config in configs.items():
        _stage(f"PTQ, {name} profile ({config.method} calibration)")
        model, _, quant_config, run = quantize_and_calibrate(space, config)
        console.print(f"calibrated {run.quantizers} quantizers on {run.images} images in "
                      f"{run.seconds:.1f} s")
        if name == "trt":
            _proxy_sensitivity(model, space, out, settings.sensitivity_batches)
        result = ptq_evals[name] = evaluate_predictor(torch_predict(model), space)
        rows.append(ReportRow("demo", "torch", name, "int8", result.map50_95, result.map50, {}))
        save_checkpoint(model, out / f"ptq_{name}.pt", config, quant_config, space, run)
        exports[name], float_onnx = export_pair(model, space, config, out, f"ptq_{name}")
        models[name] = model
        onnx_evals[name] = evaluate_onnx(exports[name], space)
    qat_rows = _qat(settings, out, float_eval, ptq_evals["trt"]) if settings.qat else []
    rows += qat_rows[:1]
    _stage("ONNX Runtime")
    onnx_evals["float"] = evaluate_onnx(float_onnx, space)
    paths = [float_onnx, *exports.values()]
    latency = bench_models([*paths, *(out / "qat" / row.model for row in qat_rows[1:])],
                           settings.bench_batches, space.img_size)
    for key, path in zip(("float", *exports), paths):
        profile, precision = (None, "fp32") if key == "float" else (key, "int8")
        rows.append(ReportRow(path.name, "onnxruntime", profile, precision,
                              onnx_evals[key].map50_95, onnx_evals[key].map50,
                              latency_for(latency, path)))
    for row in qat_rows[1:]:  # its ONNX, timed with the others
        rows.append(replace(row, latency_ms=latency_for(latency, out / "qat" / row.model)))
    rows += _tensorrt(space, out, float_onnx, exports["trt"], models["trt"], configs["trt"])
    report = Report(rows=rows, config={"demo": settings.__dict__ | {
        "bench_batches": list(settings.bench_batches)}})
    report.save(out)
    plot_report(report, out / "report.png")
    _stage("results")
    print_report(report)
    console.print(f"outputs in {out}: ptq_trt.pt, ptq_ort.pt, the ONNX files, report.json, "
                  "report.md, report.png, sensitivity.json, sensitivity.png")
    return report


def _tensorrt(space, out: Path, float_onnx: Path, trt_onnx: Path, trt_model, config) -> list:
    """Rows of an FP16 and an INT8 TensorRT engine where TensorRT and a GPU are here;
    elsewhere one line saying why the step is skipped."""
    from yoloq.engines import EngineJob, engine_rows, tensorrt_skip_reason

    reason = tensorrt_skip_reason()
    if reason is not None:
        console.print(f"TensorRT step skipped: {reason}", markup=False)
        return []
    from yoloq.runtime.tensorrt import load_tensorrt

    jobs = [EngineJob("float", space.float_model, float_onnx, "fp16", None),
            EngineJob(trt_onnx.stem, trt_model, trt_onnx, "int8", "trt")]
    return engine_rows(load_tensorrt(), jobs, space, out, config.batch, config.bench_batches,
                       config.opset)


def _proxy_sensitivity(model, space, out: Path, batches: int) -> None:
    """Rank layers by the proxy (output error removed when a layer is float)."""
    from yoloq.sensitivity import (
        RESULTS_FILE,
        ResultsFile,
        SensitivityRun,
        layer_quantizers,
        plot_sensitivity,
        proxy_scores,
        rank,
        sensitivity_table,
    )

    results_path = out / RESULTS_FILE
    results_path.unlink(missing_ok=True)  # the demo always starts over
    scores = proxy_scores(model, space.calib_loader, layer_quantizers(model),
                          ResultsFile(results_path, {"demo": True}), batches)
    run = SensitivityRun(rank(scores), results_path)
    console.print(sensitivity_table(run, "proxy", limit=5))
    plot_sensitivity(run.ranking, out / "sensitivity.png", "proxy")


def _qat(settings: DemoSettings, out: Path, float_eval, ptq_eval) -> list:
    """A short QAT run from ptq_trt.pt into out/qat; its rows for the demo report
    (torch, then ONNX Runtime)."""
    from yoloq.qat import QatConfig, run_qat

    _stage(f"QAT, trt profile ({settings.qat_epochs} epochs x {settings.qat_iters} iterations)")
    config = QatConfig(weights=settings.weights, data=settings.data, out=str(out / "qat"),
                       ptq=str(out / "ptq_trt.pt"), epochs=settings.qat_epochs,
                       iters=settings.qat_iters, lr_schedule=settings.qat_lr_schedule,
                       calib_images=settings.calib_images, val_images=settings.val_images,
                       bench_batches=(), workers=settings.workers)
    measured = {"float": float_eval, "ptq": ptq_eval}
    reference = {key: {"map50_95": e.map50_95, "map50": e.map50} for key, e in measured.items()}
    result = run_qat(config, exist_ok=True, reference=reference)  # the demo always starts over
    console.print(f"QAT: {result.state.train_seconds:.0f} s of training")
    torch_row, onnx_row = result.report.rows[2], result.report.rows[-1]
    return [replace(torch_row, model="demo"), onnx_row]


def _ptq_config(settings: DemoSettings, **extra) -> PtqConfig:
    return PtqConfig(weights=settings.weights, data=settings.data, out=settings.out,
                     method=settings.method, calib_images=settings.calib_images,
                     val_images=settings.val_images, workers=settings.workers,
                     bench_batches=settings.bench_batches, **extra)


def _stage(title: str) -> None:
    console.rule(f"[bold]{title}")
