"""`yoloq demo`: the whole workflow, for real, on the built-in benchmark.

The demo model (YOLOv7-tiny at half width, trained on yoloq's synthetic dataset)
is evaluated in float, quantized with histogram-MSE calibration for both
deployment profiles (trt and ort), exported with Q/DQ, evaluated in ONNX Runtime
(and OpenVINO, where installed) next to the float export, and timed against it;
where TensorRT and a GPU are
present, FP16 and INT8 engines are built, evaluated and timed too; with --qat a
short QAT run of the trt model joins them. Then the hard case
(`demo_hard_case`): demo-v5 with its head quantized loses points, and the
mixed-precision search and a short QAT are measured bringing them back.
Everything lands in --out.

The demo composes the shared steps and the QAT engine itself, as every workflow
does: it imports no other workflow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from yoloq.console import console
from yoloq.models.registry import has_random_weights
from yoloq.models.sensitivity import yolo_units
from yoloq.report import Report, ReportRow, plot_report, print_report
from yoloq.runtime.backends import get_backend
from yoloq.runtime.predictor import DeployJob
from yoloq.sensitivity import ResultsStore, rank
from yoloq.workflows.config import PtqConfig, QatConfig, check_output_dir
from yoloq.workflows.demo_hard_case import FOLDER, HardCase, qat_best_epoch, run_hard_case
from yoloq.workflows.steps import (
    RESULTS_FILE,
    Workspace,
    deploy,
    evaluate_model,
    export_pair,
    plot_sensitivity,
    prepare,
    proxy_scores,
    quantize_and_calibrate,
    regroup_for,
    save_checkpoint,
    sensitivity_table,
    torch_row,
)


@dataclass(frozen=True)
class DemoSettings:
    out: str = "runs/demo"
    data: str = "demo"
    weights: str = "demo"
    method: str = "mse"
    calib_images: int = 256
    # The first 500 of the 2,000 report images (and of the select images): the demo's
    # evaluations fit its 10 minutes on 2 cores; bench/accuracy.py uses them all.
    val_images: int | None = 500
    bench_batches: tuple[int, ...] = (1, 8)
    workers: int = 2
    sensitivity_batches: int = 2
    qat: bool = False  # end with a short QAT step on the trt PTQ model
    qat_epochs: int = 2
    qat_iters: int = 20
    qat_lr_schedule: str = "0:1e-5"
    # demo-v5 with its head quantized: PTQ, the search and a short QAT (None: skipped)
    hard_case: HardCase | None = HardCase()


# The two deployment profiles; the ort one with 7-bit weights, right for CPUs without VNNI.
PROFILE_SETTINGS = {"trt": {"profile": "trt"}, "ort": {"profile": "ort", "weight_bits": 7}}


def run_demo(settings: DemoSettings | None = None) -> Report:
    """Run every stage on the built-in benchmark; print and return the report."""
    settings = settings or DemoSettings()
    out = Path(settings.out)
    check_output_dir(out, exist_ok=True)  # a file in the way fails now, not after the work
    configs = {name: _ptq_config(settings, **extra) for name, extra in PROFILE_SETTINGS.items()}
    _stage("data and model")
    space = prepare(configs["trt"])
    out.mkdir(parents=True, exist_ok=True)
    console.print(f"{len(space.val_loader.dataset)} report images at {space.img_size} px "
                  f"(choices on {len(space.select_loader.dataset)} select images), "
                  f"calibration on {configs['trt'].calib_images} training images")
    _stage("float model")
    float_eval = evaluate_model(space.float_model, space)
    console.print(f"mAP@.5:.95 {100 * float_eval.map50_95:.2f}, mAP@.5 "
                  f"{100 * float_eval.map50:.2f} in torch (fp32)")
    rows = [torch_row("demo", float_eval)]
    jobs, models = [], {}
    for name, config in configs.items():
        _stage(f"PTQ, {name} profile ({config.method} calibration)")
        model, _, quant_config, run = quantize_and_calibrate(space, config)
        console.print(f"calibrated {run.quantizers} quantizers on {run.images} images in "
                      f"{run.seconds:.1f} s")
        if name == "trt":
            _proxy_sensitivity(model, space, out, settings.sensitivity_batches, config.method)
        rows.append(torch_row("demo", evaluate_model(model, space), name))
        save_checkpoint(model, out / f"ptq_{name}.pt", config, quant_config, space, run)
        onnx_path, float_onnx = export_pair(model, space, config, out, f"ptq_{name}")
        jobs.append(DeployJob(onnx_path.stem, model, onnx_path, True, name))
        models[name] = model
    jobs.insert(0, DeployJob("float", space.float_model, float_onnx, quantized=False))
    if settings.qat:
        qat_row, qat_job = _qat(settings, space, out, configs["trt"])
        rows.append(qat_row)
        jobs.append(qat_job)
    _stage("ONNX Runtime")
    onnx_rows = deploy(get_backend("onnxruntime"), jobs, space, out, configs["trt"].batch,
                       settings.bench_batches).rows
    console.print("mAP@.5:.95 " + ", ".join(f"{row.model} {_points(row.map50_95)}"
                                            for row in onnx_rows)
                  + (f"; timed at batch {', '.join(map(str, settings.bench_batches))}"
                     if settings.bench_batches else ""))
    rows += onnx_rows
    rows += _openvino(space, out, jobs, configs["trt"].batch, settings.bench_batches)
    rows += _tensorrt(space, out, jobs[:2], configs["trt"])
    # The config is nested, so the report is told about random weights, not left to guess.
    report = Report(rows=rows, config={"demo": asdict(settings)},
                    random_weights=has_random_weights(settings.weights))
    report.save(out)
    plot_report(report, out / "report.png")
    _stage("results")
    print_report(report)
    console.print(f"outputs in {out}: ptq_trt.pt, ptq_ort.pt, the ONNX files, report.json, "
                  "report.md, report.png, sensitivity.json, sensitivity.png")
    if settings.hard_case is not None:
        _stage(f"hard case: {settings.hard_case.label}")
        run_hard_case(settings.hard_case, configs["trt"], out)
        console.print(f"its outputs in {out / FOLDER}: ptq.pt, report.json, report.md, "
                      "report.png, sensitivity.json")
    return report


def _openvino(space, out: Path, jobs: list[DeployJob], batch: int,
              bench_batches: tuple[int, ...]) -> list:
    """The same ONNX files on OpenVINO where it is installed (the `openvino` extra)."""
    backend = get_backend("openvino")
    reason = backend.unavailable()
    if reason is not None:
        console.print(f"OpenVINO step skipped: {reason}", markup=False)
        return []
    _stage("OpenVINO")
    rows = deploy(backend, jobs, space, out, batch, bench_batches).rows
    console.print("mAP@.5:.95 " + ", ".join(f"{row.model} {_points(row.map50_95)}"
                                            for row in rows))
    return rows


def _tensorrt(space, out: Path, jobs: list[DeployJob], config: PtqConfig) -> list:
    """Rows of an FP16 and an INT8 TensorRT engine where TensorRT and a GPU are here;
    elsewhere one line saying why the step is skipped."""
    backend = get_backend("tensorrt")
    reason = backend.unavailable()
    if reason is not None:
        console.print(f"TensorRT step skipped: {reason}", markup=False)
        return []
    return deploy(backend, jobs, space, out, config.batch, config.bench_batches,
                  config.opset).rows


def _proxy_sensitivity(model, space, out: Path, batches: int, method: str) -> None:
    """Rank layers by the proxy (output error removed when a layer is float)."""
    results_path = out / RESULTS_FILE
    results_path.unlink(missing_ok=True)  # the demo always starts over
    units = yolo_units(model, regroup=regroup_for(model, space, method))
    scores = proxy_scores(model, space.calib_loader, units,
                          ResultsStore(results_path, {"demo": True}), batches)
    ranking = rank(scores)
    console.print(sensitivity_table(ranking, "proxy", limit=5))
    plot_sensitivity(ranking, out / "sensitivity.png", "proxy")


def _qat(settings: DemoSettings, space: Workspace, out: Path,
         ptq_config: PtqConfig) -> tuple[ReportRow, DeployJob]:
    """A short QAT run from ptq_trt.pt, keeping its best epoch: its torch row, and its
    export (qat_trt.onnx) to run with the others."""
    _stage(f"QAT, trt profile ({settings.qat_epochs} epochs x {settings.qat_iters} iterations)")
    config = qat_config(settings)
    student, best_epoch, seconds = qat_best_epoch(Path(config.ptq), config, space)
    console.print(f"QAT: {seconds:.0f} s of training")
    best_eval = evaluate_model(student, space)  # the chosen epoch, measured on report
    onnx_path, _ = export_pair(student, space, ptq_config, out, "qat_trt")
    note = f"QAT, best epoch {best_epoch + 1}/{config.epochs}"
    return (torch_row("demo", best_eval, "trt", notes=note),
            DeployJob(onnx_path.stem, student, onnx_path, True, "trt", note))


def qat_config(settings: DemoSettings) -> QatConfig:
    """The settings of the demo's QAT step: from ptq_trt.pt in --out, untimed (the ONNX
    Runtime stage times its export with the others)."""
    out = Path(settings.out)
    return QatConfig(weights=settings.weights, data=settings.data, out=str(out),
                     ptq=str(out / "ptq_trt.pt"), epochs=settings.qat_epochs,
                     iters=settings.qat_iters, lr_schedule=settings.qat_lr_schedule,
                     calib_images=settings.calib_images, val_images=settings.val_images,
                     bench_batches=(), workers=settings.workers)


def _ptq_config(settings: DemoSettings, **extra) -> PtqConfig:
    return PtqConfig(weights=settings.weights, data=settings.data, out=settings.out,
                     method=settings.method, calib_images=settings.calib_images,
                     val_images=settings.val_images, workers=settings.workers,
                     bench_batches=settings.bench_batches, **extra)


def _points(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _stage(title: str) -> None:
    console.rule(f"[bold]{title}")
