"""Quantization-aware training (QAT): fine-tune a calibrated INT8 model against its float self.

A run end to end: its PTQ source (`ptq.pt`; PTQ runs first when none is given),
epochs of the training engine (`yoloq.workflows.training`: teacher, layer-wise MSE,
optionally the detection loss), best/last checkpoints, resume, export and report.

Amax stays frozen: it is a buffer, so the optimizer never sees it, and nothing
recalibrates, so quantizers tied for TensorRT (one scale per fusion group) stay tied.

Each epoch runs `iters` batches whose order and augmentation follow (seed, epoch)
alone, so `resume=True` reaches the weights of an uninterrupted run. Under
`torchrun` the student trains in DistributedDataParallel; rank 0 evaluates, saves
and exports. Example::

    result = run_qat(QatConfig(weights="demo", data="demo", epochs=2, iters=20,
                               out="runs/qat"))
    result.report  # float, PTQ and QAT side by side
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from yoloq.console import console
from yoloq.errors import YoloqError
from yoloq.models.native import read_native, require_native
from yoloq.models.quantized import QUANTIZED_FORMAT, head_ignores, load_quantized, save_quantized
from yoloq.quant import QuantConfig, QuantModule
from yoloq.report import Report
from yoloq.workflows.config import CONFIG_FILE, PtqConfig, QatConfig, check_output_dir
from yoloq.workflows.steps import (
    Workspace,
    deploy,
    deploy_backends,
    evaluate_model,
    export_jobs,
    export_pair,
    map_fields,
    prepare,
    quantize_and_calibrate,
    reference_maps,
    save_checkpoint,
    torch_row,
)
from yoloq.workflows.training.distributed import (
    Distributed,
    create_qat_loader,
    start_distributed,
    stop_distributed,
)
from yoloq.workflows.training.train import Trainer, build_trainer, train_epoch

PTQ_FILE, BEST_FILE, LAST_FILE = "ptq.pt", "best.pt", "last.pt"


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
    report: Report | None = None


@dataclass(frozen=True)
class _Source:
    """The PTQ checkpoint QAT starts from, and what saving needs of it."""

    path: Path
    payload: dict

    @property
    def profile(self) -> str:
        return self.payload["profile"]

    def quant_config(self) -> QuantConfig:
        return QuantConfig.from_dict(self.payload["quant_config"])

    def model(self) -> nn.Module:
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
    out = Path(config.out)
    last = read_native(out / LAST_FILE) if resume else None
    if resume and last is None:
        raise YoloqError(f"--resume {out}: no {LAST_FILE} to continue from")
    if not resume:
        check_output_dir(out, exist_ok)
    given = given_ptq_source(config) if config.ptq else None  # refused before anything is written
    if context.main:
        deploy_backends(config.trt)  # before long work
    context.barrier()  # every process has checked before the first file is written
    space = prepare(config.ptq_config())
    if context.main and not resume:
        out.mkdir(parents=True, exist_ok=True)
        config.save(out)
    source = given or _ptq_source(config, space, out, context)
    student = source.model()
    if student.nc != space.float_model.nc:
        raise YoloqError(
            f"{source.path} predicts {student.nc} classes; the data has {space.float_model.nc}"
        )
    trainer = build_trainer(student, config, context, space.img_size, last)
    state = QatState(**last["qat"]["state"]) if last else QatState(reference=reference or {})
    if context.main and not state.reference:
        state.reference = reference_maps(space.float_model, trainer.student, space,
                                         str(trainer.device))
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
    """The ptq.pt that PTQ writes into `out` (on rank 0), or the one an interrupted run
    left there."""
    path = out / PTQ_FILE
    if context.main and not path.is_file():
        ptq_config = config.ptq_config()
        model, _, quant_config, run = quantize_and_calibrate(space, ptq_config)
        save_checkpoint(model, path, ptq_config, quant_config, space, run)
    context.barrier()
    return _Source(path, require_native(path, QUANTIZED_FORMAT))


def given_ptq_source(config: QatConfig) -> _Source:
    """The --ptq checkpoint, once the PTQ options given with it are checked against it."""
    path = Path(config.ptq)
    source = _Source(path, require_native(path, QUANTIZED_FORMAT, "--ptq"))
    problems = ptq_option_mismatches(config, source)
    if problems:
        raise YoloqError(f"--ptq {path} was made with other PTQ options: {'; '.join(problems)}. "
                         "Drop those options (QAT trains the checkpoint as it is), or leave "
                         "out --ptq to run PTQ with them first")
    return source


def ptq_option_mismatches(config: QatConfig, source: _Source) -> list[str]:
    """What the PTQ options set in `config` would do differently from the checkpoint;
    QAT trains the checkpoint as it is, so such an option would be silently ignored."""
    payload, problems = source.payload, []
    bits = int((payload.get("quant_config") or {}).get("weight_bits", 8))
    if config.weight_bits is not None and config.weight_bits != bits:
        problems.append(f"--weight-bits {config.weight_bits}, but the checkpoint has "
                        f"{bits}-bit weights")
    tied = bool(payload.get("ties") or payload.get("residual_adds"))
    if config.rules is not None and source.profile == "trt" and config.rules != tied:
        problems.append("--no-rules, but the checkpoint's scales are tied for TensorRT" if tied
                        else "the TensorRT rules, but the checkpoint was made with --no-rules")
    if config.ignore:
        problems += _float_layer_mismatch(config.ignore, source)
    return problems


def _float_layer_mismatch(ignore: tuple[str, ...], source: _Source) -> list[str]:
    """Modules that `ignore` (with the head, which PTQ always keeps float) would keep
    float but the checkpoint quantizes, and the other way round."""
    model = source.model()
    recorded = [re.compile(p) for p in source.payload["quant_config"].get("ignore", [])]
    wanted = [re.compile(p) for p in (*head_ignores(model), *ignore)]
    quantizable = [path for path, module in model.named_modules()
                   if isinstance(module, QuantModule) or any(r.match(path) for r in recorded)]
    kept = {path for path in quantizable if any(r.match(path) for r in recorded)}
    asked = {path for path in quantizable if any(r.match(path) for r in wanted)}
    problems = []
    if asked - kept:
        problems.append(f"--ignore keeps {_some(asked - kept)} float, but the checkpoint "
                        "quantizes them")
    if kept - asked:
        problems.append(f"the checkpoint keeps {_some(kept - asked)} float, which --ignore "
                        "does not name")
    return problems


def _some(paths: set[str], limit: int = 3) -> str:
    shown = sorted(paths)[:limit]
    return ", ".join(shown) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


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
        record.update(map_fields(evaluate_model(trainer.student, space, str(trainer.device))))
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
    """Export the best model, evaluate and time it on every backend, write the report."""
    config, out = trainer.config, Path(trainer.config.out)
    best = load_quantized(out / BEST_FILE).to(context.device)
    export_config = PtqConfig(
        **{**config.ptq_config().to_dict(), "profile": source.profile, "weight_bits": 8}
    )
    onnx_path, float_onnx = export_pair(best, space, export_config, out, f"qat_{source.profile}")
    jobs = export_jobs(space.float_model, float_onnx, best, onnx_path, source.profile,
                       notes=qat_note(config, state))
    deployments = [
        deploy(backend, jobs, space, out, config.batch,
               config.bench_batches or ((1,) if backend.name == "tensorrt" else ()),
               config.opset)
        for backend in deploy_backends(config.trt)
    ]
    report = write_qat_report(config, state, source,
                              [row for deployment in deployments for row in deployment.rows])
    return QatResult(out, state, out / BEST_FILE, out / LAST_FILE, onnx_path, report)


def qat_note(config: QatConfig, state: QatState) -> str:
    return f"QAT, best epoch {state.best_epoch + 1}/{config.epochs}"


def write_qat_report(config: QatConfig, state: QatState, source: _Source,
                     deployed_rows: list) -> Report:
    """report.json / report.md: float, PTQ and QAT in torch, then the float and QAT
    exports on every backend (ONNX Runtime; with --trt the FP16 and INT8 engines)."""
    reference = state.reference
    best = state.history[[h["epoch"] for h in state.history].index(state.best_epoch)]
    rows = [
        torch_row(Path(config.weights).name, reference["float"], notes="float"),
        torch_row(source.path.name, reference["ptq"], source.profile, notes="PTQ"),
        torch_row(BEST_FILE, best, source.profile, notes=qat_note(config, state)),
        *deployed_rows,
    ]
    report = Report(
        rows=rows,
        config={
            **config.to_dict(),
            "train_seconds": round(state.train_seconds, 1),
            "history": state.history,
        },
    )
    report.save(config.out)
    return report
