"""`yoloq sensitivity`: which layers of a YOLO detector lose accuracy in INT8, and the
mixed-precision search that keeps the fewest of them float.

The algorithm is `yoloq.sensitivity` (model-agnostic); this workflow supplies what a
YOLO detector and its data give it: the units (`model.N` layers, or modules), the
measures (mAP on fixed val images; the proxy error of the raw head outputs against
the float model on a few calibration batches), and the store in --out.

- `map`: turn only that layer's quantizers off (or, inverse, only its quantizers on)
  and measure mAP. One evaluation per layer.
- `proxy`: turn only that layer off and measure how much the detection error of the
  outputs against the float model falls. No NMS, no COCOeval: a fraction of the time.

Under `torchrun --nproc-per-node N` the units are split across the processes: each
scores every N-th unit into its own shard file (`sensitivity.rankR.json`), the first
merges them into `sensitivity.json` and goes on alone (ranking, search, outputs). A
rerun after a crash (torchrun stops every process when one dies) scores only the
units no shard holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch.nn as nn

from yoloq.console import console
from yoloq.data.splits import SELECT
from yoloq.errors import YoloqError
from yoloq.models.native import read_native
from yoloq.models.quantized import QUANTIZED_FORMAT, load_quantized
from yoloq.models.sensitivity import (
    GRANULARITIES,
    ignore_patterns,
    yolo_units,
)
from yoloq.quant import PROFILES
from yoloq.runtime.backends import get_backend
from yoloq.runtime.bench import BenchResult
from yoloq.sensitivity import (
    ResultsStore,
    SearchResult,
    Shard,
    Units,
    rank,
    score_units,
    search_fallback,
)
from yoloq.workflows.config import PtqConfig, check_method
from yoloq.workflows.steps import (
    RESULTS_FILE,
    Workspace,
    evaluate_model,
    export_pair,
    map_fields,
    paired_intervals,
    plot_sensitivity,
    prepare,
    proxy_scores,
    quantize_and_calibrate,
    reference_maps,
    regroup_for,
    select_map,
    select_reading,
    significant_gain,
)
from yoloq.workflows.training.distributed import (
    Distributed,
    start_distributed,
    stop_distributed,
)

MODES = ("map", "proxy")
LATENCY_BACKENDS = ("onnxruntime", "openvino")  # what the layers kept float cost, where


@dataclass(frozen=True)
class SensitivityConfig:
    weights: str
    data: str
    out: str = "runs/sensitivity"
    ptq: str | None = None  # a ptq.pt to analyse; default: PTQ with the settings below
    mode: str = "proxy"
    granularity: str = "layer"
    inverse: bool = False
    val_images: int | None = 500
    proxy_batches: int = 4
    target_drop: float | None = None  # points of mAP@.5:.95
    max_layers: int = 3
    top: int = 3  # layers written to ignore.txt without a search
    profile: str = "trt"
    method: str = "mse"
    calib_images: int = 256
    batch: int = 8
    img: int | None = None
    device: str = "cpu"
    workers: int = 2
    seed: int = 0
    quantize_head: bool = False  # the detection head's convolutions quantized too

    def __post_init__(self):
        check_method(self.method)
        if self.profile not in PROFILES:
            raise YoloqError(f"unknown profile {self.profile!r}; use one of {PROFILES}")
        if self.mode not in MODES:
            raise YoloqError(f"unknown mode {self.mode!r}; use one of {MODES}")
        if self.granularity not in GRANULARITIES:
            raise YoloqError(f"unknown granularity {self.granularity!r}")
        if self.inverse and self.mode != "map":
            raise YoloqError("--inverse needs --mode map")

    def settings(self) -> dict:
        """What the scores depend on: a rerun resumes only when these match."""
        ignored = {"out", "device", "workers", "target_drop", "max_layers", "top"}
        return {k: v for k, v in self.__dict__.items() if k not in ignored}


@dataclass
class SensitivityRun:
    ranking: list[tuple[str, float]]
    results_path: Path
    search: SearchResult | None = None
    latency: dict[str, BenchResult] = field(default_factory=dict)  # per backend


def run_sensitivity(config: SensitivityConfig) -> SensitivityRun | None:
    """The ranking (and search) of `config`; None in the processes of a torchrun other
    than the first, which leave the rest to it once their units are scored."""
    context = start_distributed(config.device)
    try:
        return _run(config, context)
    finally:
        stop_distributed(context)


def _run(config: SensitivityConfig, context: Distributed) -> SensitivityRun | None:
    out = Path(config.out)
    ptq_config = _ptq_config(config)
    space = prepare(ptq_config)
    out.mkdir(parents=True, exist_ok=True)
    model, method = _quantized_model(config, ptq_config, space)
    regroup = regroup_for(model, space, method, ptq_config.percentile)
    units = yolo_units(model, config.granularity, regroup)

    def map_now() -> float:
        return select_map(model, space, "the sensitivity ranking and search", config.device)

    store = None
    if context.main:  # the references (two evaluations in map mode) once, by the first
        store = ResultsStore(out / RESULTS_FILE, config.settings())
        _reference(store, model, space, config)
    context.barrier()
    store = store or ResultsStore(out / RESULTS_FILE, config.settings())
    reference = store.reference
    shard = Shard(context.rank, context.world)
    scoring = store if context.world == 1 else ResultsStore.for_rank(
        store.path, config.settings(), context.rank, reference)
    if config.mode == "proxy":
        proxy_scores(model, space.calib_loader, units, scoring, config.proxy_batches,
                     config.device, shard=shard)
    else:
        baseline = reference["float" if config.inverse else "ptq"]
        score_units(units, map_now, scoring, config.inverse, baseline, shard=shard)
    context.barrier()
    if not context.main:
        return None
    if context.world > 1:
        store.merge_shards()
    scores = {name: store.scores[name] for name in units}
    if config.mode == "proxy" and "proxy_error" not in store.reference:
        store.record("proxy_error", scoring.reference["proxy_error"], section="reference")
    run = SensitivityRun(rank(scores), store.path)
    if config.target_drop is not None:
        run.search = search_fallback(
            units, [name for name, _ in run.ranking],
            lambda: select_reading(model, space, "the mixed-precision search", config.device),
            reference["float"], config.target_drop / 100, config.max_layers,
            done_steps=reference.get("search_steps", ()),
            on_step=lambda history: store.record("search_steps", history, "reference"),
            judge=significant_gain)
        store.record("search", _search_summary(run.search), section="reference")
        if "report" not in store.reference:
            store.record("report", _report_maps(model, units, run.search, space, config),
                         section="reference")
        run.latency = _fallback_latency(model, units, run.search, space, ptq_config, out)
        store.record("latency", latency_summary(run.latency), section="reference")
    _write_outputs(run, config, out)
    return run


def _ptq_config(config: SensitivityConfig) -> PtqConfig:
    """The PTQ settings: the options', or with --ptq the checkpoint's own profile and
    calibration (what re-deriving its tied scales and labelling its exports need)."""
    settings = {"profile": config.profile, "method": config.method,
                "calib_images": config.calib_images}
    if config.ptq:
        payload = read_native(config.ptq)
        if payload is None or payload.get("format") != QUANTIZED_FORMAT:
            raise YoloqError(f"--ptq {config.ptq}: not a yoloq quantized checkpoint")
        calibration = payload.get("calibration") or {}
        settings = {"profile": payload["profile"],
                    "method": calibration.get("method", config.method),
                    "calib_images": calibration.get("images", config.calib_images)}
        console.print(f"--ptq {Path(config.ptq).name}: {settings['profile']} profile, "
                      f"{settings['method']} calibration on {settings['calib_images']} images "
                      "(from its record; --profile, --method and --calib-images do not apply)")
    return PtqConfig(weights=config.weights, data=config.data, out=config.out,
                     quantize_head=config.quantize_head,
                     batch=config.batch, img=config.img, val_images=config.val_images,
                     device=config.device, workers=config.workers, seed=config.seed,
                     **settings)


def _quantized_model(config: SensitivityConfig, ptq_config: PtqConfig,
                     space: Workspace) -> tuple[nn.Module, str]:
    """The model to analyse and its calibration method (--method auto's choice)."""
    if config.ptq:
        return load_quantized(config.ptq).to(config.device), ptq_config.method
    model, _, _, run = quantize_and_calibrate(space, ptq_config)
    return model, run.method


def _reference(store: ResultsStore, model: nn.Module, space: Workspace,
               config: SensitivityConfig) -> dict:
    """Float and all-INT8 mAP@.5:.95 on the chosen images, measured once and kept in the
    store (only map mode and the search need them)."""
    needs_map = config.mode == "map" or config.target_drop is not None
    if needs_map and "float" not in store.reference:
        maps = reference_maps(space.float_model, model, space, config.device, SELECT)
        store.record("float", maps["float"]["map50_95"], section="reference")
        store.record("ptq", maps["ptq"]["map50_95"], section="reference")
    return store.reference


def _report_maps(model: nn.Module, units: Units, search: SearchResult, space: Workspace,
                 config: SensitivityConfig) -> dict:
    """The search's outcome measured where it was not chosen: float, all-INT8 and the
    mixed model on the report images, each drop with its paired bootstrap interval."""
    float_eval = evaluate_model(space.float_model, space, config.device)
    units.enable(search.fallback)
    all_int8 = evaluate_model(model, space, config.device)
    units.disable(search.fallback)
    mixed = evaluate_model(model, space, config.device)
    measured = {"float": map_fields(float_eval)}
    for name, result in (("all_int8", all_int8), ("mixed", mixed)):
        paired = paired_intervals(float_eval, result)
        measured[name] = {**map_fields(result), "drop": paired.map50_95.drop,
                          "drop_interval": list(paired.map50_95.drop_interval)}
    console.print(f"on the report split: float {100 * float_eval.map50_95:.2f}, all-INT8 "
                  f"{100 * all_int8.map50_95:.2f}, mixed {100 * mixed.map50_95:.2f}")
    return {**measured, "splits": space.splits}


def _search_summary(search: SearchResult) -> dict:
    """The outcome; its steps are already in the file as "search_steps"."""
    return {"fallback": search.fallback, "float_map": search.float_map,
            "start_map": search.start_map, "final_map": search.final_map}


def _fallback_latency(model: nn.Module, units: Units, search: SearchResult, space: Workspace,
                      ptq_config: PtqConfig, out: Path) -> dict[str, BenchResult]:
    """What the layers kept float cost: the mixed-precision model's latency against the
    all-INT8 one, on ONNX Runtime and, where installed, OpenVINO ({backend: result})."""
    mixed, _ = export_pair(model, space, ptq_config, out, "mixed")
    units.enable(search.fallback)
    all_int8, _ = export_pair(model, space, ptq_config, out, "all_int8")
    units.disable(search.fallback)
    backends = [get_backend(name) for name in LATENCY_BACKENDS]
    return {backend.name: backend.bench([all_int8, mixed], ptq_config.bench_batches,
                                        space.img_size)
            for backend in backends if backend.unavailable() is None}


def latency_summary(latency: dict[str, BenchResult]) -> dict[str, dict[str, float]]:
    """{backend: {"batch N": mixed / all-INT8 latency}}, for the results file."""
    return {name: {f"batch {stats.batch}": round(stats.ratio, 3) for stats in result.stats
                   if stats.model.endswith("mixed.onnx")}
            for name, result in latency.items()}


def _write_outputs(run: SensitivityRun, config: SensitivityConfig, out: Path) -> None:
    chosen = run.search.fallback if run.search else [
        name for name, score in run.ranking[: config.top] if score > 0]
    lines = ignore_patterns(chosen, config.granularity)
    (out / "ignore.txt").write_text("".join(line + "\n" for line in lines))
    plot_sensitivity(run.ranking, out / "sensitivity.png", config.mode)
