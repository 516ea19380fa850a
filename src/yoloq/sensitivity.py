"""Which layers lose accuracy in INT8: per-layer sensitivity, and the mixed-precision search.

Two ways to score a layer, both returning a plain `{layer: score}` dict, higher
meaning more sensitive:

- `map`: turn only that layer's quantizers off (or, inverse, only its quantizers on)
  and measure mAP on a fixed set of val images. One evaluation per layer.
- `proxy`: turn only that layer off and measure how much the error of the model's
  outputs against the float model falls (`detection_error`), on a few batches. No NMS, no COCOeval:
  a fraction of the time.

Scores are written to `sensitivity.json` after every layer; a rerun with the same
settings skips the layers already done.

`search_fallback` then keeps the fewest layers float that bring the mAP drop under a
target, greedily, verifying every step by measured mAP.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from yoloq.console import progress
from yoloq.errors import YoloqError
from yoloq.quant import QuantMode, TensorQuantizer, iter_quantizers

RESULTS_FILE = "sensitivity.json"
GRANULARITIES = ("layer", "module")
MODES = ("map", "proxy")


def layer_quantizers(model: nn.Module, granularity: str = "layer",
                     depth: int = 2) -> dict[str, list[TensorQuantizer]]:
    """Enabled quantizers grouped by layer, in model order.

    "layer": the first `depth` components of the module path (`model.17` in YOLO);
    "module": each quantized module (`model.17.conv`).
    """
    if granularity not in GRANULARITIES:
        raise YoloqError(f"unknown granularity {granularity!r}; use one of {GRANULARITIES}")
    groups: dict[str, list[TensorQuantizer]] = {}
    for path, quantizer in iter_quantizers(model):
        if not quantizer.enabled:
            continue
        module_path = path.rpartition(".")[0]
        key = ".".join(module_path.split(".")[:depth]) if granularity == "layer" else module_path
        groups.setdefault(key, []).append(quantizer)
    return groups


@contextlib.contextmanager
def quantizers_off(quantizers: Iterable[TensorQuantizer]):
    """Disable these quantizers inside the block; restore their modes after."""
    saved = [(q, q.mode) for q in quantizers]
    for quantizer, _ in saved:
        quantizer.mode = QuantMode.DISABLED
    try:
        yield
    finally:
        for quantizer, mode in saved:
            quantizer.mode = mode


@contextlib.contextmanager
def only_enabled(groups: dict[str, list[TensorQuantizer]], keep: str):
    """Every layer's quantizers off but `keep`'s."""
    others = [q for name, qs in groups.items() if name != keep for q in qs]
    with quantizers_off(others):
        yield


class ResultsFile:
    """sensitivity.json: the settings it was computed with, and a score per finished layer.

    Written atomically after every layer, so an interrupted run loses at most one."""

    def __init__(self, path: Path, settings: dict):
        self.path, self.settings = path, settings
        self.data = {"settings": settings, "reference": {}, "scores": {}}
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("settings") != settings:
                raise YoloqError(f"{path} was computed with other settings "
                                 f"({saved.get('settings')}); use another --out to start over")
            self.data = saved

    @property
    def scores(self) -> dict[str, float]:
        return self.data["scores"]

    def record(self, key: str, value, section: str = "scores") -> None:
        self.data[section][key] = value
        self.save()

    def save(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.data, indent=1))
        temporary.replace(self.path)


def score_layers(groups: dict[str, list[TensorQuantizer]], measure: Callable[[], float],
                 results: ResultsFile, inverse: bool = False, baseline: float | None = None,
                 show_progress: bool = True) -> dict[str, float]:
    """Score every layer not yet in `results` with `measure()` (higher = better model),
    turning it off (or, with `inverse`, only it on). The score is how much the layer
    costs: measure(layer off) - baseline, or baseline - measure(only layer on)."""
    todo = [name for name in groups if name not in results.scores]
    for name in progress(todo, "sensitivity", enabled=show_progress):
        context = only_enabled(groups, name) if inverse else quantizers_off(groups[name])
        with context:
            value = measure()
        results.record(name, baseline - value if inverse else value - baseline)
    return {name: results.scores[name] for name in groups}


def output_error(model: nn.Module, batches: list[torch.Tensor],
                 references: list[list[torch.Tensor]]) -> float:
    """Mean error of the model's outputs against the float model's: `detection_error`
    for a detector's raw levels, plain squared error for any other output."""
    total, count = 0.0, 0
    with torch.inference_mode():
        for images, reference in zip(batches, references):
            outputs, detector = raw_outputs(model, images)
            for out, ref in zip(outputs, reference):
                error = detection_error if detector else squared_error
                total += error(out.float(), ref.float()).item()
                count += ref[..., 0].numel() if detector else ref.numel()
    return total / max(count, 1)


def squared_error(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return torch.sum((out - ref) ** 2)


def detection_error(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Summed error of a YOLO level's predictions (last dim: x, y, w, h, obj, classes),
    in the sigmoid space its decode works in.

    Raw logits weigh the many background anchors, saturated far below zero, as much as
    the few that detect something; mAP does not. So: the objectness error everywhere,
    and the box and class errors where the float model sees an object (weighted by its
    objectness).
    """
    student, teacher = out.sigmoid(), ref.sigmoid()
    objectness = teacher[..., 4]
    squared = (student - teacher) ** 2
    box_and_class = squared[..., :4].sum(-1) + squared[..., 5:].sum(-1)
    return torch.sum(squared[..., 4] + objectness * box_and_class)


def raw_outputs(model: nn.Module, images: torch.Tensor) -> tuple[list[torch.Tensor], bool]:
    """A detector's raw per-level outputs (logits, before the box decode) and True;
    else the model's output(s) and False."""
    output = model(images)
    if isinstance(output, (tuple, list)) and len(output) == 2 and isinstance(output[1], list):
        return list(output[1]), True
    return ([output] if isinstance(output, torch.Tensor) else list(output)), False


def rank(scores: dict[str, float]) -> list[tuple[str, float]]:
    """Layers from most to least sensitive (ties keep model order)."""
    return sorted(scores.items(), key=lambda item: -item[1])


def ignore_patterns(layers: Iterable[str], granularity: str) -> list[str]:
    """Regexes (for `--ignore-file`) that keep these layers float."""
    suffix = r"\." if granularity == "layer" else "$"
    return [re.escape(layer) + suffix for layer in layers]


@dataclass
class SearchResult:
    fallback: list[str]
    start_map: float
    final_map: float
    float_map: float
    history: list[dict] = field(default_factory=list)

    @property
    def final_drop(self) -> float:
        return self.float_map - self.final_map


def search_fallback(groups: dict[str, list[TensorQuantizer]], ranking: list[str],
                    measure: Callable[[], float], float_map: float, target_drop: float,
                    max_layers: int = 10, start_map: float | None = None,
                    show_progress: bool = True, done_steps: Iterable[dict] = (),
                    on_step: Callable[[list[dict]], None] | None = None) -> SearchResult:
    """Fall back layers to float in `ranking` order until the mAP drop is <= target_drop.

    Each candidate is kept float only if the measured mAP improves; otherwise it is
    quantized again. Stops as soon as the target is met, after `max_layers` fallbacks,
    or when the ranking is exhausted. The fallbacks stay disabled on return.

    `done_steps` (the history of an interrupted search over the same ranking) are
    replayed without measuring; `on_step(history)` is called after every new step, so
    the caller can save it.
    """
    recorded = {step["layer"]: step["map50_95"] for step in done_steps}
    current = measure() if start_map is None else start_map
    result = SearchResult([], current, current, float_map)
    for layer in progress(ranking, "mixed-precision search", enabled=show_progress):
        if float_map - current <= target_drop or len(result.fallback) >= max_layers:
            break
        saved = [(q, q.mode) for q in groups[layer]]
        for quantizer, _ in saved:
            quantizer.mode = QuantMode.DISABLED
        value = recorded[layer] if layer in recorded else measure()
        kept = value > current
        result.history.append({"layer": layer, "map50_95": value, "kept_float": kept})
        if kept:
            result.fallback.append(layer)
            current = value
        else:
            for quantizer, mode in saved:
                quantizer.mode = mode
        if on_step is not None and layer not in recorded:
            on_step(result.history)
    result.final_map = current
    return result


# --- The workflow behind `yoloq sensitivity`: YOLO model, data, reports. ---------------


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
    max_layers: int = 10
    top: int = 3  # layers written to ignore.txt without a search
    profile: str = "trt"
    method: str = "mse"
    calib_images: int = 256
    batch: int = 8
    img: int | None = None
    device: str = "cpu"
    workers: int = 2
    seed: int = 0

    def __post_init__(self):
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
    latency: object = None


def run_sensitivity(config: SensitivityConfig) -> SensitivityRun:
    from yoloq.ptq import PtqConfig, evaluate_predictor, prepare, torch_predict

    out = Path(config.out)
    ptq_config = PtqConfig(weights=config.weights, data=config.data, out=str(out),
                           profile=config.profile, method=config.method,
                           calib_images=config.calib_images, batch=config.batch, img=config.img,
                           val_images=config.val_images, device=config.device,
                           workers=config.workers, seed=config.seed)
    space = prepare(ptq_config)
    out.mkdir(parents=True, exist_ok=True)
    results = ResultsFile(out / RESULTS_FILE, config.settings())
    model = _quantized_model(config, ptq_config, space)
    groups = layer_quantizers(model, config.granularity)

    def map_now() -> float:
        return evaluate_predictor(torch_predict(model), space, config.device).map50_95

    reference = _reference_maps(results, model, space, map_now, config)
    if config.mode == "proxy":
        scores = proxy_scores(model, space.calib_loader, groups, results, config.proxy_batches,
                              config.device)
    else:
        baseline = reference["float" if config.inverse else "ptq"]
        scores = score_layers(groups, map_now, results, config.inverse, baseline)
    run = SensitivityRun(rank(scores), results.path)
    if config.target_drop is not None:
        run.search = search_fallback(
            groups, [name for name, _ in run.ranking], map_now, reference["float"],
            config.target_drop / 100, config.max_layers, start_map=reference["ptq"],
            done_steps=reference.get("search_steps", ()),
            on_step=lambda history: results.record("search_steps", history, "reference"))
        results.record("search", _search_summary(run.search), section="reference")
        run.latency = _fallback_latency(model, run.search, space, ptq_config, out)
    _write_outputs(run, config, out, groups)
    return run


def _quantized_model(config: SensitivityConfig, ptq_config, space) -> nn.Module:
    from yoloq.models.quantized import load_quantized
    from yoloq.ptq import quantize_and_calibrate

    if config.ptq:
        return load_quantized(config.ptq).to(config.device)
    model, *_ = quantize_and_calibrate(space, ptq_config)
    return model


def _reference_maps(results: ResultsFile, model, space, map_now, config) -> dict:
    """Float and all-INT8 mAP on the chosen images, computed once and kept in the file."""
    from yoloq.quant import disable_quantization

    needs_map = config.mode == "map" or config.target_drop is not None
    reference = results.data["reference"]
    if needs_map and "float" not in reference:
        with disable_quantization(model):
            results.record("float", map_now(), section="reference")
        results.record("ptq", map_now(), section="reference")
    return reference


def proxy_scores(model: nn.Module, loader, groups, results: ResultsFile, batches: int = 4,
                 device: str = "cpu", show_progress: bool = True) -> dict[str, float]:
    """Proxy sensitivity of every layer on the first `batches` batches of `loader`."""
    from yoloq.quant import disable_quantization

    images = [batch[0].to(device) for _, batch in zip(range(batches), loader)]
    with disable_quantization(model), torch.inference_mode():
        references = [raw_outputs(model, x)[0] for x in images]

    def negative_error() -> float:
        return -output_error(model, images, references)

    if "proxy_error" not in results.data["reference"]:
        results.record("proxy_error", -negative_error(), section="reference")
    baseline = -results.data["reference"]["proxy_error"]
    return score_layers(groups, negative_error, results, baseline=baseline,
                        show_progress=show_progress)


def _search_summary(search: SearchResult) -> dict:
    """The outcome; its steps are already in the file as "search_steps"."""
    return {"fallback": search.fallback, "float_map": search.float_map,
            "start_map": search.start_map, "final_map": search.final_map}


def _fallback_latency(model, search: SearchResult, space, ptq_config, out: Path):
    """ONNX Runtime latency of the mixed-precision model against the all-INT8 one."""
    from yoloq.ptq import bench_models, export_pair

    mixed, _ = export_pair(model, space, ptq_config, out, "mixed")
    fallback = {q: q.mode for name in search.fallback for q in layer_quantizers_of(model, name)}
    for quantizer in fallback:
        quantizer.mode = QuantMode.QUANTIZING
    all_int8, _ = export_pair(model, space, ptq_config, out, "all_int8")
    for quantizer, mode in fallback.items():
        quantizer.mode = mode
    return bench_models([all_int8, mixed], ptq_config.bench_batches, space.img_size)


def layer_quantizers_of(model: nn.Module, layer: str) -> list[TensorQuantizer]:
    """Every quantizer under a layer or module path, enabled or not."""
    prefix = layer + "."
    return [q for path, q in iter_quantizers(model) if path.startswith(prefix)]


def _write_outputs(run: SensitivityRun, config: SensitivityConfig, out: Path, groups) -> None:
    chosen = run.search.fallback if run.search else [
        name for name, score in run.ranking[: config.top] if score > 0]
    lines = ignore_patterns(chosen, config.granularity)
    (out / "ignore.txt").write_text("".join(line + "\n" for line in lines))
    plot_sensitivity(run.ranking, out / "sensitivity.png", config.mode)


def plot_sensitivity(ranking: list[tuple[str, float]], path: Path, mode: str,
                     limit: int = 40) -> Path:
    """A bar chart of the most sensitive layers (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
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


def sensitivity_table(run: SensitivityRun, mode: str, limit: int = 20):
    """A rich table of the ranking (and of the search, when one ran)."""
    from rich.table import Table

    table = Table(title=f"Most sensitive layers ({mode} mode)")
    table.add_column("rank", justify="right")
    table.add_column("layer")
    table.add_column("mAP points" if mode == "map" else "MSE removed", justify="right")
    for index, (name, score) in enumerate(run.ranking[:limit], start=1):
        table.add_row(str(index), name, f"{100 * score:.3f}" if mode == "map" else f"{score:.3g}")
    return table
