"""The demo's hard case: a model that loses accuracy in INT8, and what brings it back.

demo-v5 (YOLOv5n at quarter width, SiLU) with its detection head's convolutions
quantized too loses points that the head-float demo model does not. This stage
measures the float model and its PTQ on the report images, then the two ways back
that yoloq has: the mixed-precision search (the proxy ranking's most sensitive
layers, each kept float where its select mAP gain is significant) and a short QAT
from the PTQ model (best epoch on select). Every row's drop against float carries
its paired bootstrap interval; everything lands in OUT/hard_case.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch.nn as nn

from yoloq.console import console
from yoloq.data.splits import SELECT
from yoloq.evaluate import EvalResult
from yoloq.models.quantized import load_quantized
from yoloq.models.sensitivity import yolo_units
from yoloq.report import Report, plot_report, print_report
from yoloq.sensitivity import ResultsStore, rank, search_fallback
from yoloq.workflows.config import PtqConfig, QatConfig
from yoloq.workflows.steps import (
    RESULTS_FILE,
    Workspace,
    evaluate_model,
    prepare,
    proxy_scores,
    quantize_and_calibrate,
    regroup_for,
    save_checkpoint,
    select_map,
    select_reading,
    significant_gain,
    torch_row,
    with_intervals,
)
from yoloq.workflows.training import Distributed, build_trainer, create_qat_loader, train_epoch

FOLDER = "hard_case"


@dataclass(frozen=True)
class HardCase:
    weights: str = "demo-v5"
    # The ort profile with 7-bit weights: every activation quantized, the hardest cell of
    # bench/accuracy.py (18.6 points lost with MSE calibration, until the head's raw
    # outputs were calibrated in sigmoid space; bench/hard_cases.py has what is left).
    profile: str = "ort"
    weight_bits: int = 7
    target_drop: float = 0.5  # points of mAP@.5:.95 on select: where the search stops
    candidates: int = 4  # the most sensitive layers of the proxy ranking it may try
    max_layers: int = 3
    proxy_batches: int = 2
    qat_epochs: int = 2
    qat_iters: int = 20
    qat_lr_schedule: str = "0:1e-5"
    # The first 250 select and 250 report images: its ten evaluations in fake-quantized
    # torch then fit the demo's 10 minutes on 2 cores; its drops are far above their
    # intervals' width even so.
    val_images: int = 250

    @property
    def label(self) -> str:
        bits = f", {self.weight_bits}-bit weights" if self.weight_bits != 8 else ""
        return f"{self.weights}, head quantized, {self.profile} profile{bits}"


def run_hard_case(case: HardCase, ptq: PtqConfig, out: Path) -> Report:
    """Float, PTQ, PTQ + search and QAT of the hard case, in torch on the report images."""
    out = out / FOLDER
    config = replace(ptq, weights=case.weights, profile=case.profile,
                     weight_bits=case.weight_bits, quantize_head=True, out=str(out),
                     bench_batches=(), val_images=min(case.val_images, ptq.val_images or
                                                      case.val_images))
    space = prepare(config)
    out.mkdir(parents=True, exist_ok=True)
    float_eval = evaluate_model(space.float_model, space)
    model, _, quant_config, run = quantize_and_calibrate(space, config)
    checkpoint = save_checkpoint(model, out / "ptq.pt", config, quant_config, space, run)
    ptq_eval = evaluate_model(model, space)
    console.print(f"{len(space.val_loader.dataset)} report and "
                  f"{len(space.select_loader.dataset)} select images (shortened for the demo)")
    _say("PTQ", float_eval, ptq_eval)
    search_eval, kept = _search(case, model, space, config.method, out)
    _say("PTQ + search", float_eval, search_eval)
    qat_eval, qat_note = _qat(case, config, space, checkpoint)
    _say("QAT", float_eval, qat_eval)
    name = case.weights  # each row its own model name: the report pairs each with float
    rows = [torch_row(name, float_eval),
            torch_row(f"{name} ptq", ptq_eval, case.profile, notes="PTQ, head quantized"),
            torch_row(f"{name} mixed", search_eval, case.profile,
                      notes=f"search, kept float: {kept}"),
            torch_row(f"{name} qat", qat_eval, case.profile, notes=qat_note)]
    rows, paired = with_intervals(rows, [float_eval, ptq_eval, search_eval, qat_eval],
                                  space.names)
    report = Report(rows=rows, config={"hard_case": asdict(case), "ptq": asdict(config)},
                    splits=space.splits, paired=paired)
    report.save(out)
    plot_report(report, out / "report.png")
    print_report(report)
    return report


def _search(case: HardCase, model, space: Workspace, method: str,
            out: Path) -> tuple[EvalResult, str]:
    """The proxy ranking, then the search on select; the mixed model measured on report.
    The model is left as it was (every unit quantized)."""
    units = yolo_units(model, regroup=regroup_for(model, space, method))
    store = ResultsStore(out / RESULTS_FILE, {"demo_hard_case": asdict(case)})
    scores = proxy_scores(model, space.calib_loader, units, store, case.proxy_batches,
                          show_progress=False)
    candidates = [name for name, _ in rank(scores)][: case.candidates]
    float_select = select_map(space.float_model, space, "the search's float reference")
    search = search_fallback(units, candidates,
                             lambda: select_reading(model, space, "the mixed-precision search"),
                             float_select, case.target_drop / 100, case.max_layers,
                             judge=significant_gain)
    console.print(f"search on {len(space.select_loader.dataset)} select images: "
                  f"{100 * search.start_map:.2f} -> {100 * search.final_map:.2f} "
                  f"(float {100 * float_select:.2f}), {len(search.history)} layers tried")
    mixed = evaluate_model(model, space)
    units.enable(search.fallback)
    return mixed, ", ".join(search.fallback) or "none"


def _qat(case: HardCase, ptq: PtqConfig, space: Workspace,
         checkpoint: Path) -> tuple[EvalResult, str]:
    """A short QAT from the PTQ checkpoint; its best epoch (on select) measured on report."""
    config = QatConfig(weights=ptq.weights, data=ptq.data, out=ptq.out, ptq=str(checkpoint),
                       epochs=case.qat_epochs, iters=case.qat_iters,
                       lr_schedule=case.qat_lr_schedule, calib_images=ptq.calib_images,
                       val_images=ptq.val_images, bench_batches=(), workers=ptq.workers)
    student, best_epoch, seconds = qat_best_epoch(checkpoint, config, space)
    note = (f"QAT {config.epochs} x {config.iters} iterations ({seconds:.0f} s, shortened "
            f"for the demo), best epoch {best_epoch + 1}")
    return evaluate_model(student, space), note


def qat_best_epoch(checkpoint: Path, config: QatConfig, space: Workspace,
                   curve: list[float] | None = None) -> tuple[nn.Module, int, float]:
    """QAT in this process from `checkpoint`, keeping the epoch with the best select mAP:
    (the student at that epoch, in eval mode; the epoch, from 0; seconds of training).
    `curve`, where given, receives each epoch's select mAP."""
    context = Distributed()
    trainer = build_trainer(load_quantized(checkpoint), config, context, space.img_size)
    loader = create_qat_loader(config, space, context)
    best_map, best_epoch, best_state, seconds = -1.0, -1, None, 0.0
    for epoch in range(config.epochs):
        started = time.perf_counter()
        train_epoch(trainer, loader, epoch, show=True)
        seconds += time.perf_counter() - started
        chosen_on = select_map(trainer.student, space, "QAT's best epoch")
        if curve is not None:
            curve.append(chosen_on)
        console.print(f"QAT epoch {epoch + 1}/{config.epochs}: {SELECT} mAP@.5:.95 "
                      f"{100 * chosen_on:.2f}")
        if chosen_on > best_map:
            best_map, best_epoch = chosen_on, epoch
            best_state = copy.deepcopy(trainer.student.state_dict())
    student = trainer.student.eval()
    student.load_state_dict(best_state)
    return student, best_epoch, seconds


def _say(step: str, float_eval: EvalResult, result: EvalResult) -> None:
    console.print(f"{step}: report mAP@.5:.95 {100 * result.map50_95:.2f} "
                  f"(float {100 * float_eval.map50_95:.2f})")
