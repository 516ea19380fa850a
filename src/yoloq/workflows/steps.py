"""The steps every workflow composes (ptq, sensitivity, qat, demo): prepare data and
model, quantize and calibrate, evaluate any predictor, export float + quantized ONNX
and check parity, run and time exports on any backend, the report rows, and the
sensitivity proxy with its table and chart.

The steps import the core (data, models, quant, export, evaluate, runtime), never a
workflow; the workflows import the steps, never each other.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn
from rich.table import Table

from yoloq.console import console
from yoloq.data import create_calibration_loader, create_val_loader, load_data_config, load_split
from yoloq.data.splits import REPORT, SELECT, load_eval_splits, require_select
from yoloq.errors import YoloqError
from yoloq.evaluate import EvalResult, evaluate
from yoloq.evaluate.bootstrap import PairedIntervals, paired_bootstrap
from yoloq.export import detector_metadata, export_detector
from yoloq.models import load_model
from yoloq.models.quantized import quantize_yolo, save_quantized
from yoloq.models.sensitivity import detector_output_error
from yoloq.quant import METHODS, CalibrationRun, calibrate
from yoloq.quant.calibrate import calibrate_each, calibrate_groups
from yoloq.quant.weight_tuning import correct_biases, learn_rounding
from yoloq.report import Report, ReportRow, reference_rows, row_key
from yoloq.runtime.backends import get_backend
from yoloq.runtime.bench import BenchResult
from yoloq.runtime.ort import OrtModel
from yoloq.runtime.predictor import Backend, DeployJob, DeployTarget, Predictor
from yoloq.sensitivity import (
    ONE_PROCESS,
    Measurement,
    Regroup,
    ResultsStore,
    Shard,
    Units,
    output_error_measure,
    score_units,
)
from yoloq.workflows.config import AUTO, PtqConfig


@dataclass
class Workspace:
    """What every stage needs: the float model, its input size, and the data loaders:
    calibration images from train, `select_loader` for every choice a workflow makes,
    `val_loader` (the report split) for every number it reports."""

    float_model: torch.nn.Module
    img_size: int
    stride: int
    names: list[str]
    val_loader: object
    calib_loader: object
    select_loader: object = None
    splits: dict = field(default_factory=dict)  # EvalSplits.to_dict(): sizes and origin

    def loader(self, split: str):
        return self.select_loader if split == SELECT else self.val_loader


def prepare(config: PtqConfig) -> Workspace:
    """Load data and model and build the loaders; raises before anything is written."""
    data = load_data_config(config.data)
    if "val" not in data.splits:
        raise YoloqError(f"{config.data}: no 'val' split to evaluate on")
    if "train" not in data.splits:
        raise YoloqError(f"{config.data}: no 'train' split to calibrate on (calibration never "
                         "uses the images that results are chosen or measured on)")
    model = load_model(config.weights).fuse().float().eval().to(config.device)
    splits = load_eval_splits(data, config.on_bad_data, config.seed, config.val_images)
    calib_set = load_split(data, "train", on_bad_data=config.on_bad_data)
    if model.nc != data.nc:
        raise YoloqError(f"{config.weights} predicts {model.nc} classes; {config.data} has "
                         f"{data.nc}")
    model.names = list(data.names)
    stride = int(torch.as_tensor(model.stride).max())
    img_size = config.img or getattr(model, "img_size", None) or 640
    select_loader, val_loader = (
        create_val_loader(image_set, img_size, config.batch, stride, workers=config.workers)
        for image_set in (splits.select, splits.report))
    calib_loader = create_calibration_loader(calib_set, config.calib_images, img_size,
                                             config.batch, stride, config.seed, config.workers)
    return Workspace(model, img_size, stride, list(data.names), val_loader, calib_loader,
                     select_loader, splits.to_dict())


def quantize_and_calibrate(space: Workspace, config: PtqConfig, show: bool = True):
    """A quantized, calibrated copy of the float model: (model, summary, resolved config, run)."""
    model = copy.deepcopy(space.float_model)
    model, summary, quant_config = quantize_yolo(model, config.profile, config.weight_bits,
                                                 config.ignore, not config.quantize_head,
                                                 rules=config.rules)
    if show:
        console.print(f"{config.profile} profile: {len(summary.quantized)} modules quantized, "
                      f"{len(summary.ignored_paths)} kept float")
    if config.method == AUTO:
        run = choose_method(model, space, config, show)
    else:
        run = calibrate(model, space.calib_loader, method=config.method,
                        percentile=config.percentile)
    tune_weights(model, space, config, show)
    return model, summary, quant_config, run


def tune_weights(model: nn.Module, space: Workspace, config: PtqConfig, show: bool = True):
    """--adaround, then --bias-correction, on the calibration images (after the amax are
    set: both work on the quantization grid). Bias correction measures the error against
    the float model's weights, so that it corrects what the learned rounding left."""
    if config.adaround:
        errors = learn_rounding(model, space.calib_loader, show_progress=show)
        if show:
            before, after = (sum(pair[i] for pair in errors.values()) for i in (0, 1))
            console.print(f"learned rounding: {len(errors)} convolutions, output error "
                          f"{after / max(before, 1e-30):.2f}x nearest rounding's")
    if config.bias_correction:
        shifts = correct_biases(model, space.calib_loader, float_model=space.float_model,
                                show_progress=show)
        if show:
            console.print(f"bias correction: {len(shifts)} convolutions, largest shift "
                          f"{max(shifts.values(), default=0.0):.3g}")


def choose_method(model: nn.Module, space: Workspace, config: PtqConfig,
                  show: bool = True) -> CalibrationRun:
    """--method auto: every method's amax from one pass of histograms, each scored by
    mAP@.5:.95 on the select images; the model keeps the best (the first on a tie)."""
    each = calibrate_each(model, space.calib_loader, METHODS, config.percentile)
    scores = {}
    for method in METHODS:
        each.apply(method)
        scores[method] = select_map(model, space, "--method auto", config.device)
    best = max(METHODS, key=lambda method: scores[method])
    each.apply(best)
    if show:
        console.print(f"--method auto chose {best}: select mAP@.5:.95 " + ", ".join(
            f"{method} {100 * value:.2f}" for method, value in scores.items()))
    return replace(each.run, method=best, selection=scores)


def save_checkpoint(model, path: Path, config: PtqConfig, quant_config, space: Workspace,
                    run: CalibrationRun) -> Path:
    calibration = {"method": run.method, "images": run.images, "seconds": round(run.seconds, 2)}
    if run.selection:
        calibration["select_map50_95"] = run.selection  # --method auto's scores
    return save_quantized(model, path, config.profile, quant_config, space.img_size,
                          calibration=calibration)


# --- evaluation -----------------------------------------------------------------------------


def torch_predict(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda images: model(images)[0]


def evaluate_predictor(predict, space: Workspace, device: str = "cpu",
                       split: str = REPORT) -> EvalResult:
    """mAP of any predictor (torch model, ONNX Runtime, an engine) on the report images
    (or, for a choice, the select images)."""
    with torch.inference_mode():
        return evaluate(predict, space.loader(split), names=space.names, device=device)


def evaluate_model(model: nn.Module, space: Workspace, device: str = "cpu",
                   split: str = REPORT) -> EvalResult:
    """mAP of a torch model in eval mode; a model that was training goes back to it."""
    was_training = model.training
    model.eval()
    try:
        return evaluate_predictor(torch_predict(model), space, str(device), split)
    finally:
        model.train(was_training)


def select_map(model: nn.Module, space: Workspace, step: str, device: str = "cpu") -> float:
    """mAP@.5:.95 on the select images, for a choice (`step` names it): refused where the
    workspace's select loader holds the report images."""
    return select_reading(model, space, step, device).value


def select_reading(model: nn.Module, space: Workspace, step: str,
                   device: str = "cpu") -> Measurement:
    """`select_map` with its evaluation kept, for `significant_gain` to pair with."""
    require_select(space.select_loader.dataset, step)
    result = evaluate_model(model, space, device, SELECT)
    return Measurement(result.map50_95, result)


def significant_gain(current: Measurement, candidate: Measurement) -> tuple[bool, dict]:
    """A search's judge: keep a layer float only where the paired bootstrap interval of
    its mAP@.5:.95 gain (candidate - current, on the same select images) excludes 0;
    a gain inside the noise is not kept."""
    paired = paired_intervals(current.detail, candidate.detail, by_area=False)
    low, high = paired.map50_95.drop_interval  # of current - candidate
    return -high > 0, {"gain": candidate.value - current.value, "gain_interval": [-high, -low]}


def reference_evals(float_model: nn.Module, quantized: nn.Module, space: Workspace,
                    device: str = "cpu", split: str = REPORT) -> dict[str, EvalResult]:
    """{"float"|"ptq": EvalResult}: the float model and the all-INT8 model (before any
    search or training) on the report (or select) images."""
    measured = {"float": evaluate_model(float_model, space, device, split),
                "ptq": evaluate_model(quantized, space, device, split)}
    console.print(f"mAP@.5:.95 on {split}: float {100 * measured['float'].map50_95:.2f}, PTQ "
                  f"{100 * measured['ptq'].map50_95:.2f}")
    return measured


def reference_maps(float_model: nn.Module, quantized: nn.Module, space: Workspace,
                   device: str = "cpu", split: str = REPORT) -> dict[str, dict[str, float]]:
    """{"float"|"ptq": {"map50_95", "map50"}} of `reference_evals`."""
    measured = reference_evals(float_model, quantized, space, device, split)
    return {key: map_fields(result) for key, result in measured.items()}


def map_fields(result: EvalResult) -> dict[str, float]:
    return {"map50_95": result.map50_95, "map50": result.map50}


# --- intervals --------------------------------------------------------------------------------

BOOTSTRAP_RESAMPLES = 1000


def paired_intervals(baseline: EvalResult, result: EvalResult,
                     by_area: bool = True) -> PairedIntervals | None:
    """Paired bootstrap of two evaluations of the same images (None without matches: an
    evaluation read back from a file)."""
    if getattr(baseline, "matches", None) is None or getattr(result, "matches", None) is None:
        return None
    return paired_bootstrap(baseline.matches, result.matches, BOOTSTRAP_RESAMPLES,
                            by_area=by_area)


def with_intervals(rows: Sequence[ReportRow], evals: Sequence[EvalResult | None],
                   names: Sequence[str]) -> tuple[list[ReportRow], dict]:
    """The rows with their intervals, each compared with its backend's float row (as the
    report's table compares them), and the per-class and per-size drops of the others."""
    references = reference_rows(Report(rows=list(rows), config={"weights": None}))
    baseline_of = {row.backend: evals[rows.index(row)] for row in references.values()}
    done, paired = [], {}
    for row, result in zip(rows, evals, strict=True):
        baseline = baseline_of.get(row.backend)
        intervals = (paired_intervals(baseline, result, by_area=row.precision == "int8")
                     if baseline is not None and result is not None else None)
        if intervals is None:
            done.append(row)
            continue
        own = intervals.map50_95.b_interval
        if row is references[row.backend]:
            done.append(replace(row, map50_95_interval=list(own)))
            continue
        done.append(replace(row, map50_95_interval=list(own),
                            drop_interval=list(intervals.map50_95.drop_interval)))
        paired[row_key(row)] = intervals.to_dict(list(names))
    return done, paired


# --- export ---------------------------------------------------------------------------------


def export_pair(model, space: Workspace, config: PtqConfig, out: Path, name: str):
    """Export the quantized model as NAME.onnx and, once per folder, the float baseline
    as float.onnx: (quantized path, float path)."""
    def metadata(precision: str, profile: str | None) -> dict[str, str]:
        return detector_metadata(space.names, space.img_size, space.stride, precision, profile)

    quantized = export_detector(model, out / f"{name}.onnx", space.img_size, config.opset,
                                metadata=metadata("int8", config.profile),
                                int8_weights=config.stores_int8_weights)
    float_path = out / "float.onnx"
    if not float_path.exists():
        export_detector(space.float_model, float_path, space.img_size, config.opset,
                        metadata=metadata("fp32", None))
    return quantized, float_path


def check_export(predictor: Predictor, out: str | Path, img_size: int, opset: int = 13,
                 dynamic: bool = True, fp16: bool = False, fp16_io: bool = False) -> dict:
    """Export a Predictor's torch model and compare ONNX Runtime's output with torch's,
    over a batch of smooth random images.

    Each error is in the units the output has: a float output (the usual case: the
    head's decode runs in float) in pixels on the boxes and absolute on the scores; a
    quantized output (a DequantizeLinear writes it) also in steps of its grid. Returns
    {"path", "output": "float" | "quantized", "max_abs_error", "max_box_error_px",
    "max_score_error", "grid_step", "max_error_steps"} (the last two None for a float
    output). With `fp16` the float parts are exported in FP16 and compared with the
    FP32 torch model (ONNX Runtime's CPU runs FP16 nodes it has no kernel for in FP32,
    so the error is FP16's rounding of weights and activations).
    """
    from yoloq.export.detector import load_onnx, output_grid_step  # only this step reads back

    precision = "fp16" if fp16 and predictor.precision == "fp32" else predictor.precision
    metadata = detector_metadata(predictor.names, img_size, predictor.stride, precision,
                                 predictor.profile)
    path = export_detector(predictor.model, out, img_size, opset, dynamic, metadata, fp16,
                           fp16_io)
    generator = torch.Generator().manual_seed(0)
    low = torch.rand(2 if dynamic else 1, 3, img_size // 8, img_size // 8,
                     generator=generator)
    images = nn.functional.interpolate(low, size=(img_size, img_size), mode="bilinear")
    expected = predictor(images).float().cpu()
    actual = OrtModel(path, providers=["CPUExecutionProvider"])(images)
    error = (actual - expected).abs()
    step = output_grid_step(load_onnx(path))
    return {"path": str(path), "output": "float" if step is None else "quantized",
            "max_abs_error": error.max().item(), "max_box_error_px": error[..., :4].max().item(),
            "max_score_error": error[..., 4:].max().item(), "grid_step": step,
            "max_error_steps": None if step is None else error.max().item() / step}


# --- backends: run and time the exports ---------------------------------------------------


def deploy_backends(trt: bool) -> list[Backend]:
    """ONNX Runtime always, OpenVINO where it is installed (the `openvino` extra), TensorRT
    with --trt; each checked before any long work."""
    openvino = get_backend("openvino")
    backends = [get_backend("onnxruntime"), *([openvino] if openvino.unavailable() is None else []),
                *([get_backend("tensorrt")] if trt else [])]
    for backend in backends:
        backend.check()
    return backends


def export_jobs(float_model, float_onnx: Path, model, onnx_path: Path, profile: str,
                notes: str = "") -> list[DeployJob]:
    """The float baseline and the quantized model, as every report compares them."""
    return [DeployJob("float", float_model, float_onnx, quantized=False),
            DeployJob(onnx_path.stem, model, onnx_path, True, profile, notes)]


@dataclass
class Deployment:
    """Jobs run on one backend: its files, their mAP, their timing, their report rows."""

    files: list[Path]
    evals: list[EvalResult]
    bench: BenchResult | None
    rows: list[ReportRow]
    paired: dict = field(default_factory=dict)  # with_intervals' per-class and size drops


def deploy(backend: Backend, jobs: Sequence[DeployJob], space: Workspace, out: Path,
           batch: int, bench_batches: Sequence[int], opset: int = 13) -> Deployment:
    """Prepare each job's file for the backend, evaluate it, time them all together
    (none when `bench_batches` is empty); one report row per job."""
    target = DeployTarget(Path(out), tuple(space.names), space.img_size, space.stride, batch,
                          tuple(bench_batches), opset)
    files = [backend.prepare(job, target) for job in jobs]
    evals = [evaluate_predictor(backend.load(path, backend.device), space, backend.device)
             for path in files]
    bench = backend.bench(files, tuple(bench_batches), space.img_size) if bench_batches else None
    rows = [ReportRow(path.name, backend.name, job.profile, backend.precision(job),
                      result.map50_95, result.map50,
                      latency_for(bench, path, backend.latency_decimals),
                      notes=_join_notes(job.notes, bench_notes(bench, path)))
            for job, path, result in zip(jobs, files, evals)]
    rows, paired = with_intervals(rows, evals, space.names)
    return Deployment(files, evals, bench, rows, paired)


def latency_for(bench: BenchResult | None, path: Path, decimals: int = 2) -> dict[str, float]:
    """Median latency (ms) per batch size of one model of a BenchResult."""
    if bench is None:
        return {}
    return {str(s.batch): round(s.median_ms, decimals) for s in bench.stats
            if s.model == str(path)}


def bench_notes(bench: BenchResult | None, path: Path) -> str:
    """What the backend measured beside latency ("812 qps b1, 1570 qps b8")."""
    if bench is None:
        return ""
    return ", ".join(f"{s.note} b{s.batch}" for s in bench.stats
                     if s.model == str(path) and s.note)


def _join_notes(*notes: str) -> str:
    return "; ".join(note for note in notes if note)


def torch_row(model: str, result: EvalResult | dict, profile: str | None = None,
              notes: str = "") -> ReportRow:
    """A torch fake-quant (profile given) or float row."""
    fields = result if isinstance(result, dict) else map_fields(result)
    return ReportRow(model, "torch", profile, "int8" if profile else "fp32",
                     fields["map50_95"], fields["map50"], {}, notes=notes)


# --- sensitivity: the proxy measure and the ranking's table and chart ------------------------

RESULTS_FILE = "sensitivity.json"


def regroup_for(model: nn.Module, space: Workspace, method: str,
                percentile: float = 99.99) -> Regroup:
    """What calibrates, on the run's calibration images, the part of a tied scale group
    that stays quantized when a unit runs float (what ignoring the unit would give it)."""
    def regroup(groups: list[list[str]]) -> list[torch.Tensor]:
        return calibrate_groups(model, space.calib_loader, groups, method, percentile)

    return regroup


def proxy_scores(model: nn.Module, loader, units: Units, store: ResultsStore, batches: int = 4,
                 device: str = "cpu", show_progress: bool = True,
                 shard: Shard = ONE_PROCESS) -> dict[str, float]:
    """Proxy sensitivity of every unit (of this process's `shard`) on the first `batches`
    batches of `loader`."""
    images = [batch[0].to(device) for _, batch in zip(range(batches), loader)]
    negative_error = output_error_measure(model, images, detector_output_error)
    if "proxy_error" not in store.reference:
        store.record("proxy_error", -negative_error(), section="reference")
    baseline = -store.reference["proxy_error"]
    return score_units(units, negative_error, store, baseline=baseline,
                       show_progress=show_progress, shard=shard)


def plot_sensitivity(ranking: list[tuple[str, float]], path: Path, mode: str,
                     limit: int = 40) -> Path:
    """A bar chart of the most sensitive layers (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy: only when drawn
    from matplotlib.figure import Figure

    shown = ranking[:limit]
    figure = Figure(figsize=(max(6.0, 0.28 * len(shown) + 2), 4.0), layout="constrained")
    axes = figure.add_subplot()
    scale = 100 if mode == "map" else 1
    axes.bar(range(len(shown)), [score * scale for _, score in shown], color="tab:red")
    axes.set_xticks(range(len(shown)), [name for name, _ in shown], rotation=90, fontsize=7)
    axes.set_ylabel("mAP@.5:.95 recovered (points)" if mode == "map" else
                    "output MSE removed")
    axes.set_title(f"Layer sensitivity ({mode} mode), most sensitive first")
    FigureCanvasAgg(figure).print_png(str(path))
    return path


def sensitivity_table(ranking: list[tuple[str, float]], mode: str, limit: int = 20) -> Table:
    """A rich table of the most sensitive units."""
    table = Table(title=f"Most sensitive layers ({mode} mode)")
    table.add_column("rank", justify="right")
    table.add_column("layer")
    table.add_column("mAP points" if mode == "map" else "MSE removed", justify="right")
    for index, (name, score) in enumerate(ranking[:limit], start=1):
        table.add_row(str(index), name, f"{100 * score:.3f}" if mode == "map" else f"{score:.3g}")
    return table
