"""yoloq's own rows of bench/peers.py: PTQ, PTQ followed by the mixed-precision search,
and a short QAT, each written as an INT8 ONNX for the shared evaluation.

Every choice (the search's layers, QAT's best epoch) is made on the select split; the
rows' mAP is measured on the report split by the caller."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from _peers_store import Store

from yoloq.export import detector_metadata, export_detector
from yoloq.models.quantized import load_quantized
from yoloq.models.sensitivity import yolo_units
from yoloq.sensitivity import ResultsStore, rank, search_fallback
from yoloq.workflows.config import PtqConfig, QatConfig
from yoloq.workflows.qat import run_qat
from yoloq.workflows.steps import (
    Workspace,
    proxy_scores,
    quantize_and_calibrate,
    regroup_for,
    save_checkpoint,
    select_map,
    select_reading,
    significant_gain,
)

QAT_LR = "0:1e-5"  # the demo's short-QAT schedule
SEARCH = "the mixed-precision search"


@dataclass(frozen=True)
class Section:
    """One model's accuracy section: its results, data and model, and its folder."""

    store: Store
    name: str  # the model, as `--weights` names it
    space: Workspace
    config: PtqConfig  # the trt profile, head float: every row's starting point
    settings: object  # peers.Settings

    @property
    def work(self) -> Path:
        return self.store.work / self.name

    @property
    def rows(self) -> dict:
        return self.store.section(self.name)["rows"]

    def config_for(self, profile: str, quantize_head: bool) -> PtqConfig:
        bits = 7 if profile == "ort" else 8  # the ort profile's best CPU speed
        return replace(self.config, profile=profile, weight_bits=bits, quantize_head=quantize_head)


def head_key(quantize_head: bool) -> str:
    return "head_quantized" if quantize_head else "head_float"


def ptq_key(profile: str, quantize_head: bool) -> str:
    return f"yoloq_ptq_{profile}_{head_key(quantize_head)}"


def ptq_seconds(section: Section, key: str) -> float:
    """The tool time of the PTQ row that a search or QAT row starts from."""
    row = section.rows.get(key) or {}
    if "seconds" not in row or row.get("error"):
        raise RuntimeError(f"{key} failed or did not run: nothing to start from")
    return row["seconds"]


def export(model, space: Workspace, path: Path, profile: str | None) -> Path:
    precision = "int8" if profile else "fp32"
    metadata = detector_metadata(space.names, space.img_size, space.stride, precision, profile)
    return export_detector(model, path, space.img_size, metadata=metadata)


def yoloq_ptq(section: Section, profile: str, quantize_head: bool) -> dict:
    """quantize -> calibrate -> save the checkpoint -> export, as `yoloq ptq` does."""
    config = section.config_for(profile, quantize_head)
    model, _, quant_config, run = quantize_and_calibrate(section.space, config, show=False)
    name = ptq_key(profile, quantize_head)
    save_checkpoint(model, section.work / f"{name}.pt", config, quant_config, section.space, run)
    return {"onnx": export(model, section.space, section.work / f"{name}.onnx", profile)}


def select_reference(section: Section, key: str, model_of) -> dict:
    """Torch mAP@.5:.95 of the float model or a PTQ checkpoint on the select images (what
    the search chooses by), measured once per results file."""
    saved = section.store.section(section.name).setdefault("torch_select", {})
    if key not in saved:
        started = time.perf_counter()
        value = select_map(model_of(), section.space, SEARCH)
        saved[key] = {"map50_95": value, "seconds": round(time.perf_counter() - started, 1)}
        section.store.save()
    return saved[key]


def yoloq_search(section: Section, profile: str, quantize_head: bool) -> dict:
    """PTQ, then `search_fallback` over the proxy ranking's most sensitive layers until the
    torch mAP drop on the select images is under the target (`yoloq sensitivity
    --target-drop`)."""
    space, settings, start = section.space, section.settings, ptq_key(profile, quantize_head)
    before = ptq_seconds(section, start)
    checkpoint = section.work / f"{start}.pt"
    reference = {
        "float": select_reference(section, "float", lambda: space.float_model),
        "ptq": select_reference(section, start, lambda: load_quantized(checkpoint)),
    }
    started = time.perf_counter()
    model = load_quantized(checkpoint)
    groups = yolo_units(model, regroup=regroup_for(model, space, "mse"))  # as its PTQ
    results = ResultsStore(
        section.work / f"sensitivity_{profile}_{head_key(quantize_head)}.json",
        {"profile": profile, "batches": settings.proxy_batches},
    )
    scores = proxy_scores(model, space.calib_loader, groups, results, settings.proxy_batches)
    candidates = [name for name, _ in rank(scores)][: settings.search_candidates]
    search = search_fallback(
        groups,
        candidates,
        lambda: select_reading(model, space, SEARCH),
        reference["float"]["map50_95"],
        settings.target_drop / 100,
        settings.max_fallback,
        judge=significant_gain,
    )
    name = f"yoloq_search_{profile}_{head_key(quantize_head)}.onnx"
    path = export(model, space, section.work / name, profile)
    spent = sum(ref["seconds"] for ref in reference.values()) + time.perf_counter() - started
    return {
        "onnx": path,
        "fallback": search.fallback,
        "tried": len(search.history),
        "select_map50_95": search.final_map,
        "seconds": round(before + spent, 1),
    }


def yoloq_qat(section: Section, quantize_head: bool) -> dict:
    """A short `run_qat` from the trt PTQ checkpoint (teacher: the float model); it picks
    its best epoch on the select images and measures its own references on report."""
    settings, start = section.settings, ptq_key("trt", quantize_head)
    before = ptq_seconds(section, start)
    out = section.work / f"qat_trt_{head_key(quantize_head)}"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    config = QatConfig(
        weights=section.name,
        data=section.config.data,
        out=str(out),
        ptq=str(section.work / f"{start}.pt"),
        quantize_head=quantize_head,
        epochs=settings.qat_epochs,
        iters=settings.qat_iters,
        lr_schedule=QAT_LR,
        calib_images=settings.calib_images,
        val_images=settings.val_images,
        batch=settings.batch,
        bench_batches=(),
        workers=2,
    )
    result = run_qat(config, exist_ok=True)
    spent = time.perf_counter() - started
    return {
        "onnx": result.onnx,
        "train_seconds": round(result.state.train_seconds, 1),
        "best_epoch": result.state.best_epoch + 1,
        "seconds": round(before + spent, 1),
    }
