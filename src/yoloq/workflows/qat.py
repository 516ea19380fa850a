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
from yoloq.data.splits import SELECT
from yoloq.errors import YoloqError
from yoloq.evaluate import EvalResult
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
    reference_evals,
    save_checkpoint,
    torch_row,
    with_intervals,
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
    measured: dict[str, EvalResult] = {}  # this process's report evaluations, for intervals
    if context.main and not state.reference:
        measured = reference_evals(space.float_model, trainer.student, space,
                                   str(trainer.device))
        state.reference = {key: map_fields(result) for key, result in measured.items()}
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
    return _finish(trainer, space, source, state, context, measured) if context.main else None


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
    if config.ignore or config.quantize_head:
        problems += _float_layer_mismatch(config.ignore, config.quantize_head, source)
    return problems


def _float_layer_mismatch(ignore: tuple[str, ...], quantize_head: bool,
                          source: _Source) -> list[str]:
    """Modules that `ignore` (with the head, unless --quantize-head) would keep float but
    the checkpoint quantizes, and the other way round."""
    model = source.model()
    recorded = [re.compile(p) for p in source.payload["quant_config"].get("ignore", [])]
    head = [] if quantize_head else head_ignores(model)
    wanted = [re.compile(p) for p in (*head, *ignore)]
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
        # The best epoch is a choice: it is made on the select images, never on report.
        chosen_on = evaluate_model(trainer.student, space, str(trainer.device), SELECT)
        record.update({f"select_{key}": value for key, value in map_fields(chosen_on).items()})
        record["seconds"] = round(state.train_seconds, 1)
        state.history.append(record)
        if record["select_map50_95"] > state.best_map:
            state.best_map, state.best_epoch = record["select_map50_95"], epoch
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
            f"lr {record['lr']:.1e}, select mAP@.5:.95 {100 * record['select_map50_95']:.2f} "
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
    trainer: Trainer, space: Workspace, source: _Source, state: QatState, context: Distributed,
    measured: dict[str, EvalResult],
) -> QatResult:
    """Export the best model, evaluate and time it on every backend, write the report."""
    config, out = trainer.config, Path(trainer.config.out)
    best = load_quantized(out / BEST_FILE).to(context.device)
    if set(measured) != {"float", "ptq"}:  # a resumed run: its first process measured them
        measured = reference_evals(space.float_model, source.model().to(context.device), space,
                                   str(context.device))
    measured["qat"] = evaluate_model(best, space, str(context.device))
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
    report = write_qat_report(config, state, source, measured, space,
                              [row for deployment in deployments for row in deployment.rows],
                              [deployment.paired for deployment in deployments])
    return QatResult(out, state, out / BEST_FILE, out / LAST_FILE, onnx_path, report)


def qat_note(config: QatConfig, state: QatState) -> str:
    return f"QAT, best epoch {state.best_epoch + 1}/{config.epochs}"


def write_qat_report(config: QatConfig, state: QatState, source: _Source,
                     measured: dict[str, EvalResult], space: Workspace, deployed_rows: list,
                     deployed_paired: list[dict]) -> Report:
    """report.json / report.md: float, PTQ and QAT in torch, then the float and QAT
    exports on every backend (ONNX Runtime; with --trt the FP16 and INT8 engines); every
    mAP on the report images, the best epoch chosen on the select images."""
    torch_rows, paired = with_intervals(
        [torch_row(Path(config.weights).name, measured["float"], notes="float"),
         torch_row(source.path.name, measured["ptq"], source.profile, notes="PTQ"),
         torch_row(BEST_FILE, measured["qat"], source.profile, notes=qat_note(config, state))],
        [measured["float"], measured["ptq"], measured["qat"]], space.names)
    for more in deployed_paired:
        paired.update(more)
    report = Report(
        rows=[*torch_rows, *deployed_rows],
        config={
            **config.to_dict(),
            "train_seconds": round(state.train_seconds, 1),
            "history": state.history,
        },
        splits=space.splits,
        paired=paired,
    )
    report.save(config.out)
    return report
