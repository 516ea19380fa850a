"""Which units of a quantized model lose accuracy in INT8, for any model.

The caller supplies three things and this module knows nothing else of the model:

- units: named groups of the model's quantizer call sites (`Units`, e.g. `units_by_path`),
  which switch a unit float exactly as ignoring it at quantize time would, ties and all;
- a measure: a function of no arguments, higher meaning a better model (mAP, or the
  negative output error of `output_error_measure`), evaluated on the model as it is;
- a store: `ResultsStore`, a JSON file written after every unit, so an interrupted run
  resumes where it stopped.

`score_units` turns each unit off (or, inverse, only it on) and scores what that
changes; `rank` orders them; `search_fallback` keeps the fewest units float that bring
the drop under a target, greedily, verifying every step with the measure (and a
`Judge` of what counts as a gain: a noisy measure asks for a significant one). Example::

    units = units_by_path(model, depth=1)                  # "layer1", "fc", ...
    measure = output_error_measure(model, batches, squared_error)
    store = ResultsStore(Path("sensitivity.json"), {"model": "resnet18"})
    ranking = rank(score_units(units, measure, store, baseline=measure()))
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from yoloq.console import progress
from yoloq.errors import YoloqError
from yoloq.files import write_text_atomic
from yoloq.quant import QuantMode, TensorQuantizer, disable_quantization
from yoloq.quant.calibrate import set_submodule

# 2: scores, references and the search are measured on the select split, and the
# search's outcome on the report split is kept beside them.
SCHEMA_VERSION = 2
# error(model, images, float outputs) -> (summed error, how many values it sums) per output
ErrorFunction = Callable[[nn.Module, torch.Tensor, object], Iterable[tuple[float, int]]]
# regroup([[site, ...], ...]) -> the amax each group of call sites calibrates to on its own
Regroup = Callable[[list[list[str]]], list[torch.Tensor]]


class Units:
    """Named units of a quantized model's call sites (quantizer paths, with duplicates:
    a quantizer tied across sites is listed at each), and switches that run some units
    float, exactly as ignoring them when quantizing would.

    Ignoring a unit removes its sites; every scale group it shared with other units
    keeps the rest tied, with the amax those sites calibrate to without it. So turning
    a unit off puts a disabled quantizer at each of its sites and gives each group's
    remaining part the amax `regroup` calibrates for it (computed once per part and
    kept). A model without ties never needs `regroup`.
    """

    def __init__(self, model: nn.Module, unit_of: Callable[[str], str | None],
                 regroup: Regroup | None = None):
        self.model, self.regroup = model, regroup
        self.members: dict[str, list[str]] = {}
        self._quantizers: dict[str, TensorQuantizer] = {}
        for site, quantizer in _enabled_sites(model):
            self._quantizers[site] = quantizer  # all of them: a site outside every unit
            name = unit_of(site)                # may still share a scale with one inside
            if name is not None:
                self.members.setdefault(name, []).append(site)
        self._groups = _scale_groups(self._quantizers)
        self._full = {id(q): q.amax.clone() for q in self._quantizers.values()
                      if q.amax is not None}
        self._disabled: dict[str, TensorQuantizer] = {}
        self._amax: dict[frozenset[str], torch.Tensor] = {}
        self.kept = set(self._quantizers)

    def __iter__(self):
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)

    def sites(self, names: Iterable[str]) -> set[str]:
        return {site for name in names for site in self.members[name]}

    def disable(self, names: Iterable[str]) -> None:
        """Run these units float from now on."""
        self._apply(self.kept - self.sites(names))

    def enable(self, names: Iterable[str]) -> None:
        """Quantize these units again."""
        self._apply(self.kept | self.sites(names))

    @contextlib.contextmanager
    def off(self, names: Iterable[str]):
        """These units float inside the block (on top of those already off)."""
        with self._state(self.kept - self.sites(names)):
            yield

    @contextlib.contextmanager
    def only(self, name: str):
        """Every unit float but `name` inside the block."""
        with self._state(self.sites([name])):
            yield

    def prepare(self, names: Iterable[str], inverse: bool = False) -> None:
        """Calibrate, in one pass, the group parts that turning each unit off (or, with
        `inverse`, only it on) will need."""
        self._calibrate([self.sites([n]) if inverse else self.kept - self.sites([n])
                         for n in names])

    @contextlib.contextmanager
    def _state(self, kept: set[str]):
        previous = set(self.kept)
        self._apply(kept)
        try:
            yield
        finally:
            self._apply(previous)

    def _apply(self, kept: set[str]) -> None:
        self._calibrate([kept])
        for group in self._groups:
            quantizer = self._quantizers[group[0]]
            part = [site for site in group if site in kept]
            if part and len(part) < len(group):
                quantizer.set_amax(self._amax[frozenset(part)])
            elif part and id(quantizer) in self._full:
                quantizer.set_amax(self._full[id(quantizer)])
            for site in group:
                set_submodule(self.model, site, quantizer if site in kept else
                              self._disabled_at(site))
        self.kept = set(kept)

    def _calibrate(self, plans: Iterable[set[str]]) -> None:
        parts = {frozenset(site for site in group if site in kept)
                 for kept in plans for group in self._groups}
        needed = [p for p in parts if p and p not in self._amax
                  and len(p) < len(self._group_of(next(iter(p))))]
        if not needed:
            return
        if self.regroup is None:
            raise YoloqError("part of a tied scale group runs float: give Units a regroup "
                             "function to calibrate what stays tied")
        ordered = [[site for site in self._group_of(next(iter(p))) if site in p] for p in needed]
        for part, amax in zip(needed, self.regroup(ordered)):
            self._amax[part] = amax

    def _group_of(self, site: str) -> tuple[str, ...]:
        return next(group for group in self._groups if site in group)

    def _disabled_at(self, site: str) -> TensorQuantizer:
        if site not in self._disabled:
            quantizer = self._quantizers[site]
            self._disabled[site] = TensorQuantizer(quantizer.spec, quantizer.name)
            self._disabled[site].mode = QuantMode.DISABLED
        return self._disabled[site]


def _enabled_sites(model: nn.Module) -> Iterator[tuple[str, TensorQuantizer]]:
    for path, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, TensorQuantizer) and module.enabled:
            yield path, module


def _scale_groups(quantizers: dict[str, TensorQuantizer]) -> list[tuple[str, ...]]:
    """The sites of each quantizer object, in model order: one scale group each."""
    groups: dict[int, list[str]] = {}
    for site, quantizer in quantizers.items():
        groups.setdefault(id(quantizer), []).append(site)
    return [tuple(sites) for sites in groups.values()]


def units_by_path(model: nn.Module, depth: int | None = None, regroup: Regroup | None = None,
                  only: Iterable[str] | None = None) -> Units:
    """Units of the first `depth` components of each site's module path (None: each
    quantized module is a unit), in model order; `only`: these units alone."""
    wanted = None if only is None else set(only)

    def unit_of(site: str) -> str | None:
        module_path = site.rpartition(".")[0]
        name = module_path if depth is None else ".".join(module_path.split(".")[:depth])
        return name if wanted is None or name in wanted else None

    return Units(model, unit_of, regroup)


@dataclass(frozen=True)
class Shard:
    """One process's share of the units when several processes score them (torchrun):
    every `world`-th unit in model order, starting at `rank`."""

    rank: int = 0
    world: int = 1

    def mine(self, names: Iterable[str]) -> list[str]:
        return [name for index, name in enumerate(names) if index % self.world == self.rank]


ONE_PROCESS = Shard()  # every unit


def shard_path(path: Path, rank: int) -> Path:
    """Where process `rank` keeps its scores: sensitivity.json -> sensitivity.rank1.json."""
    path = Path(path)
    return path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def _shard_files(path: Path) -> list[Path]:
    path = Path(path)
    return sorted(path.parent.glob(f"{path.stem}.rank*{path.suffix}"))


class ResultsStore:
    """A JSON file: the settings the scores were computed with, reference values, and a
    score per finished unit. Written atomically after every record, so an interrupted
    run loses at most one unit; reopened with other settings, it refuses.

    Several processes share the work through shard files (`for_rank`), which the main
    process merges into the one file (`merge_shards`); a run that crashed leaves its
    shards, and the rerun takes up every unit they hold."""

    def __init__(self, path: Path, settings: dict):
        self.path, self.settings = Path(path), settings
        self.data = {"schema_version": SCHEMA_VERSION, "settings": settings, "reference": {},
                     "scores": {}}
        if self.path.is_file():
            saved = read_results(self.path)
            if saved.get("schema_version", 1) < SCHEMA_VERSION:
                raise YoloqError(f"{self.path} was written by an older yoloq, which scored on "
                                 "other images; use another --out to start over")
            if saved.get("settings") != settings:
                raise YoloqError(f"{self.path} was computed with other settings "
                                 f"({saved.get('settings')}); use another --out to start over")
            self.data = {**saved, "schema_version": SCHEMA_VERSION}

    @classmethod
    def for_rank(cls, path: Path, settings: dict, rank: int, reference: dict) -> ResultsStore:
        """Process `rank`'s shard of the store at `path`: its own file, holding from the
        start every score already in the main file or any shard (so that a rerun, with
        any number of processes, scores only what no process finished), and the main
        store's reference values."""
        store = cls(shard_path(path, rank), settings)
        for known in (Path(path), *_shard_files(path)):
            if known.is_file() and known != store.path:
                saved = cls(known, settings)  # refuses other settings, as the main file does
                store.data["scores"] = {**saved.scores, **store.scores}
        store.data["reference"] = {**reference, **store.reference}
        return store

    def merge_shards(self) -> int:
        """Take in the scores of every shard file beside this store, then remove them;
        the number of scores taken in."""
        merged = 0
        for path in _shard_files(self.path):
            shard = ResultsStore(path, self.settings)
            new = {name: score for name, score in shard.scores.items() if name not in self.scores}
            self.data["scores"].update(new)
            merged += len(new)
        self.save()
        for path in _shard_files(self.path):
            path.unlink()
        return merged

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
        write_text_atomic(self.path, json.dumps(self.data, indent=1))


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
                show_progress: bool = True, shard: Shard = ONE_PROCESS) -> dict[str, float]:
    """Score every unit of this process's `shard` not yet in `store` with `measure()`
    (higher = better model), turning it off (or, with `inverse`, only it on). The score
    is what the unit costs: measure(unit off) - baseline, or baseline - measure(only the
    unit on). Returns the scores the store has (every unit's, in one process)."""
    todo = [name for name in shard.mine(units) if name not in store.scores]
    units.prepare(todo, inverse)
    for name in progress(todo, "sensitivity", enabled=show_progress):
        with units.only(name) if inverse else units.off([name]):
            value = measure()
        store.record(name, baseline - value if inverse else value - baseline)
    return {name: store.scores[name] for name in units if name in store.scores}


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


@dataclass(frozen=True)
class Measurement:
    """A measure's reading: its value (higher = better) and what a `Judge` may need to
    compare two readings beyond it (the YOLO workflow: the evaluation, for intervals)."""

    value: float
    detail: object = None


# judge(current, candidate) -> (keep the candidate's unit float?, what to record of it)
Judge = Callable[[Measurement, Measurement], tuple[bool, dict]]


def higher_value(current: Measurement, candidate: Measurement) -> tuple[bool, dict]:
    """Keep any gain: for measures without noise (an output error on fixed batches)."""
    return candidate.value > current.value, {}


def _reading(value: float | Measurement) -> Measurement:
    return value if isinstance(value, Measurement) else Measurement(float(value))


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


def search_fallback(units: Units, ranking: list[str], measure: Callable[[], float | Measurement],
                    float_map: float, target_drop: float, max_layers: int = 10,
                    start_map: float | None = None, show_progress: bool = True,
                    done_steps: Iterable[dict] = (),
                    on_step: Callable[[list[dict]], None] | None = None,
                    judge: Judge = higher_value) -> SearchResult:
    """Fall back units to float in `ranking` order until the drop is <= target_drop.

    Each candidate is kept float only where `judge` finds it improves the model (by
    default: any gain; a noisy measure wants a judge that asks for a significant one);
    otherwise it is quantized again. Stops as soon as the target is met, after
    `max_layers` fallbacks, or when the ranking is exhausted. The fallbacks stay
    disabled on return.

    `done_steps` (the history of an interrupted search over the same ranking) are
    replayed without measuring, and the model they leave is measured once before the
    next step; `on_step(history)` is called after every new step, so the caller can
    save it. `start_map` (the measure of the model as given) spares a measurement
    unless the judge needs a reading's detail.
    """
    recorded = {step["layer"]: step for step in done_steps}
    current = _reading(measure()) if start_map is None else Measurement(start_map)
    judge_reads_details = judge is not higher_value
    result = SearchResult([], current.value, current.value, float_map)
    for unit in progress(ranking, "mixed-precision search", enabled=show_progress):
        if float_map - current.value <= target_drop or len(result.fallback) >= max_layers:
            break
        units.disable([unit])
        if unit in recorded:
            step = recorded[unit]
            kept, candidate = step["kept_float"], Measurement(step["map50_95"])
        else:
            if current.detail is None and judge_reads_details:
                current = _reading(measure())  # the model as it is now, with its detail
            candidate = _reading(measure())
            kept, notes = judge(current, candidate)
            step = {"layer": unit, "map50_95": candidate.value, "kept_float": kept, **notes}
        result.history.append(step)
        if kept:
            result.fallback.append(unit)
            current = candidate
        else:
            units.enable([unit])
        if on_step is not None and unit not in recorded:
            on_step(result.history)
    result.final_map = current.value
    return result
