"""Which units of a quantized model lose accuracy in INT8, for any model.

The caller supplies three things and this module knows nothing else of the model:

- units: named groups of quantizers (`{"layer1": [q, q, ...]}`), e.g. `units_by_path`;
- a measure: a function of no arguments, higher meaning a better model (mAP, or the
  negative output error of `output_error_measure`), evaluated on the model as it is;
- a store: `ResultsStore`, a JSON file written after every unit, so an interrupted run
  resumes where it stopped.

`score_units` turns each unit off (or, inverse, only it on) and scores what that
changes; `rank` orders them; `search_fallback` keeps the fewest units float that bring
the drop under a target, greedily, verifying every step with the measure. Example::

    units = units_by_path(model, depth=1)                  # "layer1", "fc", ...
    measure = output_error_measure(model, batches, squared_error)
    store = ResultsStore(Path("sensitivity.json"), {"model": "resnet18"})
    ranking = rank(score_units(units, measure, store, baseline=measure()))
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from yoloq.console import progress
from yoloq.errors import YoloqError
from yoloq.quant import QuantMode, TensorQuantizer, disable_quantization, iter_quantizers

SCHEMA_VERSION = 1
Units = dict[str, list[TensorQuantizer]]
# error(model, images, float outputs) -> (summed error, how many values it sums) per output
ErrorFunction = Callable[[nn.Module, torch.Tensor, object], Iterable[tuple[float, int]]]


def units_by_path(model: nn.Module, depth: int | None = None) -> Units:
    """Enabled quantizers grouped by the first `depth` components of their module path
    (None: each quantized module is a unit), in model order."""
    units: Units = {}
    for path, quantizer in iter_quantizers(model):
        if not quantizer.enabled:
            continue
        module_path = path.rpartition(".")[0]
        key = module_path if depth is None else ".".join(module_path.split(".")[:depth])
        units.setdefault(key, []).append(quantizer)
    return units


def quantizers_under(model: nn.Module, unit: str) -> list[TensorQuantizer]:
    """Every quantizer under a unit's module path, enabled or not."""
    prefix = unit + "."
    return [q for path, q in iter_quantizers(model) if path.startswith(prefix)]


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
def only_enabled(units: Units, keep: str):
    """Every unit's quantizers off but `keep`'s."""
    with quantizers_off(q for name, qs in units.items() if name != keep for q in qs):
        yield


class ResultsStore:
    """A JSON file: the settings the scores were computed with, reference values, and a
    score per finished unit. Written atomically after every record, so an interrupted
    run loses at most one unit; reopened with other settings, it refuses."""

    def __init__(self, path: Path, settings: dict):
        self.path, self.settings = Path(path), settings
        self.data = {"schema_version": SCHEMA_VERSION, "settings": settings, "reference": {},
                     "scores": {}}
        if self.path.is_file():
            saved = read_results(self.path)
            if saved.get("settings") != settings:
                raise YoloqError(f"{self.path} was computed with other settings "
                                 f"({saved.get('settings')}); use another --out to start over")
            self.data = {**saved, "schema_version": SCHEMA_VERSION}

    @property
    def scores(self) -> dict[str, float]:
        return self.data["scores"]

    @property
    def reference(self) -> dict:
        return self.data["reference"]

    def record(self, key: str, value, section: str = "scores") -> None:
        self.data[section][key] = value
        self.save()

    def save(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.data, indent=1))
        temporary.replace(self.path)


def read_results(path: Path) -> dict:
    """A results file's contents; one written by a newer yoloq is refused."""
    data = json.loads(Path(path).read_text())
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise YoloqError(f"{path}: schema_version {version} is newer than this yoloq reads "
                         f"({SCHEMA_VERSION}); upgrade yoloq, or use another --out")
    return data


def score_units(units: Units, measure: Callable[[], float], store: ResultsStore,
                inverse: bool = False, baseline: float | None = None,
                show_progress: bool = True) -> dict[str, float]:
    """Score every unit not yet in `store` with `measure()` (higher = better model),
    turning it off (or, with `inverse`, only it on). The score is what the unit costs:
    measure(unit off) - baseline, or baseline - measure(only the unit on)."""
    todo = [name for name in units if name not in store.scores]
    for name in progress(todo, "sensitivity", enabled=show_progress):
        context = only_enabled(units, name) if inverse else quantizers_off(units[name])
        with context:
            value = measure()
        store.record(name, baseline - value if inverse else value - baseline)
    return {name: store.scores[name] for name in units}


def rank(scores: dict[str, float]) -> list[tuple[str, float]]:
    """Units from most to least sensitive (ties keep model order)."""
    return sorted(scores.items(), key=lambda item: -item[1])


def output_error_measure(model: nn.Module, batches: Sequence[torch.Tensor],
                         error: ErrorFunction) -> Callable[[], float]:
    """A measure: minus the mean error of the model's outputs against its own outputs
    with every quantizer off (the float model), on fixed batches. No labels needed."""
    with disable_quantization(model), torch.inference_mode():
        references = [model(images) for images in batches]

    def negative_error() -> float:
        total, count = 0.0, 0
        with torch.inference_mode():
            for images, reference in zip(batches, references):
                for value, n in error(model, images, reference):
                    total, count = total + value, count + n
        return -total / max(count, 1)

    return negative_error


def squared_error(model: nn.Module, images: torch.Tensor, reference) -> list[tuple[float, int]]:
    """Summed squared error of a model's output tensor(s); for any model."""
    output = model(images)
    pairs = zip(*(_tensors(x) for x in (output, reference)))
    return [(torch.sum((out.float() - ref.float()) ** 2).item(), ref.numel())
            for out, ref in pairs]


def _tensors(output) -> list[torch.Tensor]:
    return [output] if isinstance(output, torch.Tensor) else list(output)


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


def search_fallback(units: Units, ranking: list[str], measure: Callable[[], float],
                    float_map: float, target_drop: float, max_layers: int = 10,
                    start_map: float | None = None, show_progress: bool = True,
                    done_steps: Iterable[dict] = (),
                    on_step: Callable[[list[dict]], None] | None = None) -> SearchResult:
    """Fall back units to float in `ranking` order until the drop is <= target_drop.

    Each candidate is kept float only if the measure improves; otherwise it is
    quantized again. Stops as soon as the target is met, after `max_layers` fallbacks,
    or when the ranking is exhausted. The fallbacks stay disabled on return.

    `done_steps` (the history of an interrupted search over the same ranking) are
    replayed without measuring; `on_step(history)` is called after every new step, so
    the caller can save it.
    """
    recorded = {step["layer"]: step["map50_95"] for step in done_steps}
    current = measure() if start_map is None else start_map
    result = SearchResult([], current, current, float_map)
    for unit in progress(ranking, "mixed-precision search", enabled=show_progress):
        if float_map - current <= target_drop or len(result.fallback) >= max_layers:
            break
        saved = [(q, q.mode) for q in units[unit]]
        for quantizer, _ in saved:
            quantizer.mode = QuantMode.DISABLED
        value = recorded[unit] if unit in recorded else measure()
        kept = value > current
        result.history.append({"layer": unit, "map50_95": value, "kept_float": kept})
        if kept:
            result.fallback.append(unit)
            current = value
        else:
            for quantizer, mode in saved:
                quantizer.mode = mode
        if on_step is not None and unit not in recorded:
            on_step(result.history)
    result.final_map = current
    return result
