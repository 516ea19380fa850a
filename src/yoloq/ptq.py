"""Post-training quantization of a YOLO detector, end to end.

load -> fuse -> insert quantizers (head kept float) -> calibrate -> evaluate float
and INT8 on the same images -> save `ptq.pt` -> export ONNX -> evaluate it in ONNX
Runtime -> time it against the float ONNX -> report.

The steps are functions of their own, so that `yoloq demo` (and later QAT and
sensitivity analysis) reuse them.
"""

from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import yaml

from yoloq.configfile import YamlConfig
from yoloq.console import console
from yoloq.data import create_calibration_loader, create_val_loader, load_data_config, load_split
from yoloq.engines import EngineJob, check_tensorrt_run, engine_rows
from yoloq.errors import YoloqError
from yoloq.evaluate import EvalResult, evaluate
from yoloq.quant import METHODS, PROFILES, CalibrationRun, calibrate

CONFIG_FILE = "config.yaml"


@dataclass(frozen=True)
class PtqConfig(YamlConfig):
    """Everything a PTQ run depends on; saved as `config.yaml` next to its outputs."""

    settings_name = "PTQ"

    weights: str
    data: str
    out: str = "runs/ptq"
    profile: str = "trt"
    method: str = "mse"
    percentile: float = 99.99
    calib_images: int = 256
    batch: int = 8
    img: int | None = None
    ignore: tuple[str, ...] = ()
    weight_bits: int = 8
    val_images: int | None = None  # None: the whole val split
    bench_batches: tuple[int, ...] = (1, 8)
    device: str = "cpu"
    workers: int = 2
    seed: int = 0
    on_bad_data: str = "error"
    opset: int = 13
    rules: bool = True  # trt profile: tie the scales TensorRT needs equal (Concat, MaxPool)
    trt: bool = False  # also build, evaluate and time TensorRT engines (FP16 and INT8)

    def __post_init__(self):
        object.__setattr__(self, "ignore", tuple(self.ignore))
        object.__setattr__(self, "bench_batches", tuple(int(b) for b in self.bench_batches))
        if self.method not in METHODS:
            raise YoloqError(f"unknown calibration method {self.method!r}; use one of {METHODS}")
        if self.profile not in PROFILES:
            raise YoloqError(f"unknown profile {self.profile!r}; use one of {PROFILES}")
        if self.profile == "trt" and self.weight_bits != 8:
            raise YoloqError("--weight-bits 7 is for the ort profile; TensorRT needs 8")
        if self.trt and self.profile != "trt":
            raise YoloqError(f"--trt builds TensorRT engines: use the trt profile, not "
                             f"{self.profile}")
        if self.calib_images <= 0 or self.batch <= 0:
            raise YoloqError("--calib-images and --batch must be positive")
        for pattern in self.ignore:
            try:
                re.compile(pattern)
            except re.error as error:
                raise YoloqError(f"--ignore {pattern!r} is not a valid regex: {error}") from None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ignore"], data["bench_batches"] = list(self.ignore), list(self.bench_batches)
        return data

    def save(self, folder: Path) -> Path:
        path = Path(folder) / CONFIG_FILE
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


def read_ignore_file(path: str | Path) -> list[str]:
    """One regex per line; blank lines and lines starting with # are skipped."""
    path = Path(path)
    if not path.is_file():
        raise YoloqError(f"ignore file not found: {path}")
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


@dataclass
class Workspace:
    """What every stage needs: the float model, its input size, and the data loaders."""

    float_model: torch.nn.Module
    img_size: int
    stride: int
    names: list[str]
    val_loader: object
    calib_loader: object


def prepare(config: PtqConfig) -> Workspace:
    """Load data and model and build the loaders; raises before anything is written."""
    from yoloq.models import load_model

    data = load_data_config(config.data)
    if "val" not in data.splits:
        raise YoloqError(f"{config.data}: no 'val' split to evaluate on")
    val_set = load_split(data, "val", on_bad_data=config.on_bad_data)
    calib_split = "train" if "train" in data.splits else "val"
    calib_set = load_split(data, calib_split, on_bad_data=config.on_bad_data)
    model = load_model(config.weights).fuse().float().eval().to(config.device)
    if model.nc != data.nc:
        raise YoloqError(f"{config.weights} predicts {model.nc} classes; {config.data} has "
                         f"{data.nc}")
    model.names = list(data.names)
    stride = int(torch.as_tensor(model.stride).max())
    img_size = config.img or getattr(model, "img_size", None) or 640
    if config.val_images is not None:
        val_set = replace(val_set, records=val_set.records[: config.val_images])
    val_loader = create_val_loader(val_set, img_size, config.batch, stride,
                                   workers=config.workers)
    calib_loader = create_calibration_loader(calib_set, config.calib_images, img_size,
                                             config.batch, stride, config.seed, config.workers)
    return Workspace(model, img_size, stride, list(data.names), val_loader, calib_loader)


def quantize_and_calibrate(space: Workspace, config: PtqConfig, show: bool = True):
    """A quantized, calibrated copy of the float model: (model, summary, resolved config, run)."""
    from yoloq.models.quantized import quantize_yolo

    model = copy.deepcopy(space.float_model)
    model, summary, quant_config = quantize_yolo(model, config.profile, config.weight_bits,
                                                 config.ignore, rules=config.rules)
    if show:
        console.print(f"{config.profile} profile: {len(summary.quantized)} modules quantized, "
                      f"{len(summary.ignored_paths)} kept float")
    run = calibrate(model, space.calib_loader, method=config.method,
                    percentile=config.percentile)
    return model, summary, quant_config, run


def evaluate_predictor(predict, space: Workspace, device: str = "cpu") -> EvalResult:
    """mAP of any predictor (torch model, ONNX Runtime) on the workspace's val images."""
    with torch.inference_mode():
        return evaluate(predict, space.val_loader, names=space.names, device=device)


def torch_predict(model: torch.nn.Module):
    return lambda images: model(images)[0]


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
    latency: object = None  # a yoloq.runtime.bench.BenchResult
    report: object = None
    tensorrt_rows: list = field(default_factory=list)  # with --trt: FP16 and INT8 engines


def run_ptq(config: PtqConfig, exist_ok: bool = False) -> PtqResult:
    """The whole PTQ workflow; writes config.yaml, ptq.pt, the ONNX files and the report."""
    out = Path(config.out)
    check_output_dir(out, exist_ok)
    tensorrt = check_tensorrt_run(config.profile) if config.trt else None  # before long work
    space = prepare(config)
    model, summary, quant_config, run = quantize_and_calibrate(space, config)
    float_eval = evaluate_predictor(torch_predict(space.float_model), space, config.device)
    ptq_eval = evaluate_predictor(torch_predict(model), space, config.device)
    out.mkdir(parents=True, exist_ok=True)
    config.save(out)
    (out / "quantization.txt").write_text(str(summary))
    checkpoint = save_checkpoint(model, out / "ptq.pt", config, quant_config, space, run)
    onnx_path, float_onnx = export_pair(model, space, config, out, f"ptq_{config.profile}")
    onnx_eval = evaluate_onnx(onnx_path, space)
    float_onnx_eval = evaluate_onnx(float_onnx, space)
    latency = bench_models([float_onnx, onnx_path], config.bench_batches, space.img_size)
    result = PtqResult(out, float_eval, ptq_eval, onnx_eval, run, checkpoint, onnx_path,
                       float_onnx, float_onnx_eval, latency)
    if tensorrt is not None:
        jobs = [EngineJob("float", space.float_model, float_onnx, "fp16", None),
                EngineJob(onnx_path.stem, model, onnx_path, "int8", config.profile)]
        result.tensorrt_rows = engine_rows(tensorrt, jobs, space, out, config.batch,
                                           config.bench_batches, config.opset)
    result.report = write_report(result, config)
    return result


def check_output_dir(out: Path, exist_ok: bool) -> None:
    if out.exists() and not out.is_dir():
        raise YoloqError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not exist_ok:
        raise YoloqError(f"--out {out} is not empty; choose another folder or pass --exist-ok")


def save_checkpoint(model, path: Path, config: PtqConfig, quant_config, space: Workspace,
                    run: CalibrationRun) -> Path:
    from yoloq.models.quantized import save_quantized

    return save_quantized(model, path, config.profile, quant_config, space.img_size,
                          calibration={"method": run.method, "images": run.images,
                                       "seconds": round(run.seconds, 2)})


def export_pair(model, space: Workspace, config: PtqConfig, out: Path, name: str):
    """Export the quantized model and the float baseline; check both in ONNX Runtime."""
    from yoloq.export import detector_metadata, export_detector

    def metadata(precision: str, profile: str | None) -> dict[str, str]:
        return detector_metadata(space.names, space.img_size, space.stride, precision, profile)

    quantized = export_detector(model, out / f"{name}.onnx", space.img_size, config.opset,
                                metadata=metadata("int8", config.profile))
    float_path = out / "float.onnx"
    if not float_path.exists():
        export_detector(space.float_model, float_path, space.img_size, config.opset,
                        metadata=metadata("fp32", None))
    return quantized, float_path


def evaluate_onnx(path: Path, space: Workspace) -> EvalResult:
    from yoloq.runtime import OrtModel

    return evaluate_predictor(OrtModel(path, providers=["CPUExecutionProvider"]), space)


def bench_models(paths: list[Path], batches, img_size: int):
    """ONNX Runtime latency of the models, interleaved, per batch size (a BenchResult);
    ratios are to the first model."""
    from yoloq.runtime.bench import benchmark_onnx

    return benchmark_onnx(list(paths), batch_sizes=tuple(batches), img_size=img_size)


def write_report(result: PtqResult, config: PtqConfig):
    from yoloq.report import Report, ReportRow

    def latency(path: Path) -> dict[str, float]:
        return latency_for(result.latency, path)

    rows = [
        ReportRow(Path(config.weights).name, "torch", None, "fp32",
                  result.float_eval.map50_95, result.float_eval.map50, {}),
        ReportRow(Path(config.weights).name, "torch", config.profile, "int8",
                  result.ptq_eval.map50_95, result.ptq_eval.map50, {}),
        ReportRow(result.float_onnx.name, "onnxruntime", None, "fp32",
                  result.float_onnx_eval.map50_95, result.float_onnx_eval.map50,
                  latency(result.float_onnx)),
        ReportRow(result.onnx.name, "onnxruntime", config.profile, "int8",
                  result.onnx_eval.map50_95, result.onnx_eval.map50, latency(result.onnx)),
    ]
    report = Report(rows=rows + list(result.tensorrt_rows), config=config.to_dict())
    report.save(result.out)
    return report


def latency_for(bench, path: Path) -> dict[str, float]:
    """Median latency (ms) per batch size of one model of a BenchResult."""
    if bench is None:
        return {}
    return {str(s.batch): round(s.median_ms, 2) for s in bench.stats if s.model == str(path)}
