"""A QAT run end to end: its PTQ source, epochs, best/last checkpoints, resume, report."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from yoloq.console import console
from yoloq.engines import EngineJob, check_tensorrt_run, engine_rows
from yoloq.errors import YoloqError
from yoloq.ptq import PtqConfig, Workspace
from yoloq.qat.config import BEST_FILE, CONFIG_FILE, LAST_FILE, PTQ_FILE, QatConfig
from yoloq.qat.distributed import (
    Distributed,
    create_qat_loader,
    start_distributed,
    stop_distributed,
)
from yoloq.qat.train import Trainer, build_trainer, train_epoch

# --- the run: state, checkpoints, report ---------------------------------------------------


@dataclass
class QatState:
    """Where a run stands; saved in last.pt so that a resumed run carries on."""

    epoch: int = -1  # the last finished epoch
    best_map: float = -1.0
    best_epoch: int = -1
    train_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    reference: dict = field(default_factory=dict)  # {"float"|"ptq": {"map50_95", "map50"}}


@dataclass
class QatResult:
    out: Path
    state: QatState
    best: Path
    last: Path
    onnx: Path | None = None
    report: object = None  # a yoloq.report.Report


@dataclass(frozen=True)
class _Source:
    """The PTQ checkpoint QAT starts from, and what saving needs of it."""

    path: Path
    payload: dict

    @property
    def profile(self) -> str:
        return self.payload["profile"]

    def quant_config(self):
        from yoloq.quant import QuantConfig

        return QuantConfig.from_dict(self.payload["quant_config"])

    def model(self) -> nn.Module:
        from yoloq.models.quantized import load_quantized

        return load_quantized(self.path, self.payload)


def run_qat(
    config: QatConfig,
    exist_ok: bool = False,
    resume: bool = False,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    reference: dict | None = None,
) -> QatResult | None:
    """The whole QAT workflow; writes config.yaml, ptq.pt (when PTQ runs), best.pt, last.pt,
    the ONNX files and the report into `config.out`.

    resume: continue the run in `config.out` after its last saved epoch.
    on_epoch_end(epoch, record): called on every process after each epoch.
    reference: {"float"|"ptq": {"map50_95", "map50"}} when the caller has measured them
        on the same val images (they are not measured again).
    Returns the result on rank 0, None on the other ranks of a torchrun.
    """
    context = start_distributed(config.device)
    try:
        return _run(config, context, exist_ok, resume, on_epoch_end, reference)
    finally:
        stop_distributed(context)


def resume_qat(folder: str | Path, **overrides) -> QatResult | None:
    """Continue the interrupted run in `folder` (its config.yaml and last.pt)."""
    config = QatConfig.load(Path(folder) / CONFIG_FILE)
    settings = {**config.to_dict(), "out": str(folder)}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return run_qat(QatConfig.from_dict(settings), resume=True)


def _run(
    config: QatConfig,
    context: Distributed,
    exist_ok: bool,
    resume: bool,
    on_epoch_end,
    reference: dict | None,
) -> QatResult | None:
    from yoloq.models.native import read_native
    from yoloq.ptq import check_output_dir, prepare

    out = Path(config.out)
    last = read_native(out / LAST_FILE) if resume else None
    if resume and last is None:
        raise YoloqError(f"--resume {out}: no {LAST_FILE} to continue from")
    if not resume:
        check_output_dir(out, exist_ok)
    if config.trt and context.main:
        check_tensorrt_run(config.profile)  # before long work
    context.barrier()  # every process has checked before the first file is written
    space = prepare(config.ptq_config())
    if context.main and not resume:
        out.mkdir(parents=True, exist_ok=True)
        config.save(out)
    source = _ptq_source(config, space, out, context)
    student = source.model()
    if student.nc != space.float_model.nc:
        raise YoloqError(
            f"{source.path} predicts {student.nc} classes; the data has {space.float_model.nc}"
        )
    trainer = build_trainer(student, config, context, space.img_size, last)
    state = QatState(**last["qat"]["state"]) if last else QatState(reference=reference or {})
    if context.main and not state.reference:
        state.reference = _reference_maps(trainer, space)
    loader = create_qat_loader(config, space, context)
    if context.main:
        console.print(
            f"QAT from {source.path.name}: {len(trainer.layers)} supervised layers, "
            f"{config.epochs} epochs x {config.iters} iterations, batch "
            f"{config.batch} x {context.world} process(es) on {context.device}"
        )
    for epoch in range(state.epoch + 1, config.epochs):
        record = _epoch(trainer, loader, epoch, space, source, state, context)
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
    return _finish(trainer, space, source, state, context) if context.main else None


def _ptq_source(config: QatConfig, space: Workspace, out: Path, context: Distributed) -> _Source:
    """The given ptq.pt, or the one PTQ writes into `out` (on rank 0) when none is given."""
    from yoloq.models.native import read_native
    from yoloq.ptq import quantize_and_calibrate, save_checkpoint

    path = Path(config.ptq) if config.ptq else out / PTQ_FILE
    if not config.ptq and context.main and not path.is_file():
        ptq_config = config.ptq_config()
        model, _, quant_config, run = quantize_and_calibrate(space, ptq_config)
        save_checkpoint(model, path, ptq_config, quant_config, space, run)
    context.barrier()
    payload = read_native(path) if path.is_file() else None
    if payload is None:
        raise YoloqError(f"--ptq {path}: not a yoloq quantized checkpoint")
    return _Source(path, payload)


def _reference_maps(trainer: Trainer, space: Workspace) -> dict:
    """mAP of the float model and of the PTQ model (the student before training)."""
    reference = {
        "float": _evaluate(space.float_model, space, trainer.device),
        "ptq": _evaluate(trainer.student, space, trainer.device),
    }
    console.print(
        f"mAP@.5:.95 float {100 * reference['float']['map50_95']:.2f}, PTQ "
        f"{100 * reference['ptq']['map50_95']:.2f}"
    )
    return reference


def _evaluate(model: nn.Module, space: Workspace, device) -> dict[str, float]:
    from yoloq.ptq import evaluate_predictor, torch_predict

    was_training = model.training
    model.eval()
    result = evaluate_predictor(torch_predict(model), space, str(device))
    model.train(was_training)
    return {"map50_95": result.map50_95, "map50": result.map50}


def _epoch(
    trainer: Trainer,
    loader,
    epoch: int,
    space: Workspace,
    source: _Source,
    state: QatState,
    context: Distributed,
) -> dict:
    """Train one epoch; rank 0 evaluates and saves best.pt (when better) and last.pt."""
    started = time.perf_counter()
    record = {"epoch": epoch, **train_epoch(trainer, loader, epoch, show=context.main)}
    state.train_seconds += time.perf_counter() - started
    state.epoch = epoch
    if context.main:
        record.update(_evaluate(trainer.student, space, trainer.device))
        record["seconds"] = round(state.train_seconds, 1)
        state.history.append(record)
        if record["map50_95"] > state.best_map:
            state.best_map, state.best_epoch = record["map50_95"], epoch
            _save(trainer, source, space, BEST_FILE, {"epoch": epoch, "record": record})
        _save(
            trainer,
            source,
            space,
            LAST_FILE,
            {
                "state": asdict(state),
                "optimizer": trainer.optimizer.state_dict(),
                "scaler": trainer.scaler.state_dict(),
            },
        )
        console.print(
            f"epoch {epoch + 1}/{trainer.config.epochs}: loss {record['loss']:.4g}, "
            f"lr {record['lr']:.1e}, mAP@.5:.95 {100 * record['map50_95']:.2f} "
            f"(best {100 * state.best_map:.2f}, epoch {state.best_epoch + 1})"
        )
    context.barrier()
    return record


def _save(trainer: Trainer, source: _Source, space: Workspace, name: str, qat: dict) -> Path:
    """A quantized checkpoint (atomic: a torn file is never left) with QAT fields."""
    from yoloq.models.quantized import save_quantized

    path = Path(trainer.config.out) / name
    save_quantized(
        trainer.student,
        path,
        source.profile,
        source.quant_config(),
        space.img_size,
        qat={**qat, "config": trainer.config.to_dict(), "source": str(source.path)},
    )
    console.print(f"rank {_rank()}: saved {name}", style="dim")
    return path


def _rank() -> int:
    initialized = torch.distributed.is_available() and torch.distributed.is_initialized()
    return torch.distributed.get_rank() if initialized else 0


def _finish(
    trainer: Trainer, space: Workspace, source: _Source, state: QatState, context: Distributed
) -> QatResult:
    """Export the best model, evaluate it in ONNX Runtime, time it, write the report."""
    from yoloq.models.quantized import load_quantized
    from yoloq.ptq import bench_models, evaluate_onnx, export_pair

    config, out = trainer.config, Path(trainer.config.out)
    best = load_quantized(out / BEST_FILE).to(context.device)
    export_config = PtqConfig(
        **{**config.ptq_config().to_dict(), "profile": source.profile, "weight_bits": 8}
    )
    onnx_path, float_onnx = export_pair(best, space, export_config, out, f"qat_{source.profile}")
    evals = {path: evaluate_onnx(path, space) for path in (float_onnx, onnx_path)}
    latency = None
    if config.bench_batches:
        latency = bench_models([float_onnx, onnx_path], config.bench_batches, space.img_size)
    engines = []
    if config.trt:
        jobs = [EngineJob("float", space.float_model, float_onnx, "fp16", None),
                EngineJob(onnx_path.stem, best, onnx_path, "int8", source.profile)]
        engines = engine_rows(check_tensorrt_run(source.profile), jobs, space, out,
                              config.batch, config.bench_batches or (1,), config.opset)
    report = write_qat_report(config, state, source, evals, latency, engines)
    return QatResult(out, state, out / BEST_FILE, out / LAST_FILE, onnx_path, report)


def write_qat_report(
    config: QatConfig, state: QatState, source: _Source, evals: dict, latency,
    tensorrt_rows: list | None = None,
) -> object:
    """report.json / report.md: float, PTQ and QAT in torch; float and QAT in ONNX Runtime;
    with --trt the FP16 and INT8 engines."""
    from yoloq.ptq import latency_for
    from yoloq.report import Report, ReportRow

    profile, reference = source.profile, state.reference
    best = state.history[[h["epoch"] for h in state.history].index(state.best_epoch)]
    qat_note = f"QAT, best epoch {state.best_epoch + 1}/{config.epochs}"
    rows = [
        ReportRow(
            Path(config.weights).name,
            "torch",
            None,
            "fp32",
            reference["float"]["map50_95"],
            reference["float"]["map50"],
            notes="float",
        ),
        ReportRow(
            source.path.name,
            "torch",
            profile,
            "int8",
            reference["ptq"]["map50_95"],
            reference["ptq"]["map50"],
            notes="PTQ",
        ),
        ReportRow(
            BEST_FILE, "torch", profile, "int8", best["map50_95"], best["map50"], notes=qat_note
        ),
    ]
    for path, result in evals.items():
        quantized = path.name != "float.onnx"
        rows.append(
            ReportRow(
                path.name,
                "onnxruntime",
                profile if quantized else None,
                "int8" if quantized else "fp32",
                result.map50_95,
                result.map50,
                latency_for(latency, path),
                notes=qat_note if quantized else "",
            )
        )
    report = Report(
        rows=rows + list(tensorrt_rows or []),
        config={
            **config.to_dict(),
            "train_seconds": round(state.train_seconds, 1),
            "history": state.history,
        },
    )
    report.save(config.out)
    return report
