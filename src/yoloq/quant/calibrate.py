"""`calibrate(model, data)`: run data through a quantized model and set every amax.

Also `calibrate_groups`, the amax a group of call sites would get if it were one tied
quantizer on its own, and the switches that turn quantization off or on for part of
a model.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from yoloq.console import progress
from yoloq.quant.calib import (
    HISTOGRAM_METHODS,
    HistogramCalibrator,
    MaxCalibrator,
    SignedHistogramCalibrator,
)
from yoloq.quant.quantizer import QuantMode, TensorQuantizer, iter_quantizers

METHODS = ("max", *HISTOGRAM_METHODS)

# `data` is an iterable of batches, or a callable that runs the model itself.
CalibrationData = Iterable | Callable[[nn.Module], None]


@dataclass(frozen=True)
class CalibrationRun:
    """What a calibration did: how many batches and images, and how long it took
    (`collect_seconds` running the data, `amax_seconds` computing amax from statistics)."""

    method: str
    batches: int
    images: int
    quantizers: int
    collect_seconds: float
    amax_seconds: float
    # Where a method was chosen among several: each one's score (higher is better).
    selection: dict[str, float] | None = None

    @property
    def seconds(self) -> float:
        return self.collect_seconds + self.amax_seconds


def calibrate(
    model: nn.Module,
    data: CalibrationData,
    method: str = "max",
    percentile: float = 99.99,
    num_batches: int | None = None,
    show_progress: bool = True,
) -> CalibrationRun:
    """Set the amax of every enabled quantizer from the activations `data` produces.

    data: an iterable of batches (a tensor, or a tuple/list whose first item is the
        images; moved to the model's device), or a `forward_loop(model)` callable.
    method: "max", or a histogram method: "entropy", "mse", "percentile".
        Quantizers whose spec asks for a max calibrator (weights) use max whatever
        the method. Disabled quantizers are left alone.

    Example::

        calibrate(model, (images for images, *_ in loader), method="mse", num_batches=32)
    """
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; use one of {METHODS}")
    targets = [q for _, q in iter_quantizers(model) if q.enabled]
    with _calibration_mode(model, targets, method):
        started = time.perf_counter()
        batches, images = _run_data(model, data, num_batches, show_progress)
        if batches == 0 and not callable(data):
            raise ValueError("calibration data produced no batches")
        collected = time.perf_counter()
        for quantizer in targets:
            quantizer.set_amax(*_grid_of(quantizer, method, percentile))
    return CalibrationRun(method, batches, images, len(targets), collected - started,
                          time.perf_counter() - collected)


@dataclass
class MethodAmaxes:
    """Every method's amax for every calibrated quantizer, from one pass over the data
    (`calibrate_each`); `apply(method)` gives the model that method's calibration."""

    quantizers: list[TensorQuantizer]
    amax: dict[str, list[torch.Tensor]]
    run: CalibrationRun

    amin: dict[str, list[torch.Tensor | None]] | None = None  # asymmetric grids' lower ends

    def apply(self, method: str) -> None:
        amin = (self.amin or {}).get(method) or [None] * len(self.quantizers)
        for quantizer, amax, low in zip(self.quantizers, self.amax[method], amin, strict=True):
            quantizer.set_amax(amax, low)


def calibrate_each(
    model: nn.Module,
    data: CalibrationData,
    methods: Sequence[str] = METHODS,
    percentile: float = 99.99,
    num_batches: int | None = None,
    show_progress: bool = True,
) -> MethodAmaxes:
    """Collect histograms once and compute the amax of every method in `methods` from
    them: what `calibrate` with each method gives, at the cost of one. The model is left
    with the first method's amax."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown calibration methods {unknown}; use some of {METHODS}")
    targets = [q for _, q in iter_quantizers(model) if q.enabled]
    with _calibration_mode(model, targets, "entropy"):  # histograms (max for weights)
        started = time.perf_counter()
        batches, images = _run_data(model, data, num_batches, show_progress)
        if batches == 0 and not callable(data):
            raise ValueError("calibration data produced no batches")
        collected = time.perf_counter()
        grids = {method: [_grid_of(q, method, percentile) for q in targets]
                 for method in methods}
    amax = {method: [high for high, _ in grid] for method, grid in grids.items()}
    amin = {method: [low for _, low in grid] for method, grid in grids.items()}
    run = CalibrationRun("+".join(methods), batches, images, len(targets),
                         collected - started, time.perf_counter() - collected)
    result = MethodAmaxes(targets, amax, run, amin)
    result.apply(methods[0])
    return result


def _make_calibrator(quantizer: TensorQuantizer, method: str):
    spec = quantizer.spec
    if method == "max" or spec.calibrator == "max":
        return MaxCalibrator(spec.axis)
    if spec.asymmetric:
        return SignedHistogramCalibrator(spec.num_bits, spec.num_bins, spec.error_space)
    return HistogramCalibrator(spec.num_bits, spec.num_bins, spec.error_space)


@contextlib.contextmanager
def _calibration_mode(model: nn.Module, targets: list[TensorQuantizer], method: str):
    was_training = model.training
    model.eval()
    for quantizer in targets:
        quantizer.calibrator = _make_calibrator(quantizer, method)
        quantizer.mode = QuantMode.CALIBRATING
    try:
        yield
    finally:
        for quantizer in targets:
            quantizer.calibrator = None
            quantizer.mode = QuantMode.QUANTIZING
        model.train(was_training)


def _run_data(model: nn.Module, data: CalibrationData, num_batches: int | None,
              show_progress: bool) -> tuple[int, int]:
    if callable(data):
        with torch.no_grad():
            data(model)
        return 0, 0
    device = model_device(model)
    batches = images = 0
    with torch.no_grad():
        for tensor in batch_images(data, num_batches, "calibrating", show_progress):
            model(tensor.to(device))
            batches += 1
            images += len(tensor)
    return batches, images


def batch_images(data: Iterable, limit: int | None, description: str,
                 show_progress: bool = True) -> Iterator[torch.Tensor]:
    """The image tensor of each of the first `limit` batches of `data` (a batch is a
    tensor or a tuple led by one), with a progress bar."""
    total = limit if limit is not None else _length(data)
    for batch in progress(_take(data, limit), description, total, show_progress):
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


def _grid_of(quantizer: TensorQuantizer, method: str,
             percentile: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(amax, amin) from a quantizer's calibrator; amin (the lower end) only where the
    spec is asymmetric, amax then the upper end."""
    return _calibrated(quantizer.calibrator, quantizer.spec.asymmetric, method, percentile,
                       quantizer.name)


def _calibrated(calibrator, asymmetric: bool, method: str, percentile: float,
                name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    try:
        if asymmetric:
            if isinstance(calibrator, SignedHistogramCalibrator):
                low, high = calibrator.compute_range(method, percentile)
            else:
                low, high = calibrator.compute_range()
            return high, low
        if isinstance(calibrator, HistogramCalibrator):
            return calibrator.compute_amax(method, percentile), None
        return calibrator.compute_amax(), None
    except RuntimeError:
        raise RuntimeError(f"quantizer {name} saw no data during calibration: is its "
                           "module used in the model's forward?") from None


def calibrate_groups(
    model: nn.Module,
    data: CalibrationData,
    groups: Sequence[Sequence[str]],
    method: str = "max",
    percentile: float = 99.99,
    num_batches: int | None = None,
    show_progress: bool = True,
) -> list[torch.Tensor]:
    """The amax each group of call sites (quantizer paths, as `named_modules` names them
    with duplicates) would get as one quantizer of its own, from one pass over `data`.

    This is what `calibrate` gives a model in which only that group is tied: each
    group's calibrator sees the tensors of its sites in forward order, with every
    quantizer of the model passing values through, as in calibration. The model's own
    quantizers and their amax are left as they were. Sensitivity uses it to re-derive
    the scale of what stays tied when part of a group runs float.
    """
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; use one of {METHODS}")
    calibrators, asymmetric, feeds = [], [], {}
    for group in groups:
        leader = model.get_submodule(group[0])
        calibrators.append(_make_calibrator(leader, method))
        asymmetric.append(leader.spec.asymmetric)
        for site in group:
            feeds.setdefault(site, []).append(calibrators[-1])
    was_training = model.training
    model.eval()
    try:
        with disable_quantization(model), _sites_replaced(model, feeds):
            _run_data(model, data, num_batches, show_progress)
    finally:
        model.train(was_training)
    return [_calibrated(calibrator, asym, method, percentile, ", ".join(group))[0]
            for calibrator, asym, group in zip(calibrators, asymmetric, groups, strict=True)]


class _Feed(nn.Module):
    """Stands at a call site during `calibrate_groups`: hands each tensor to the
    calibrators of every group the site belongs to, and passes it on unchanged."""

    def __init__(self, calibrators: list):
        super().__init__()
        self.calibrators = calibrators

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for calibrator in self.calibrators:
            calibrator.collect(x)
        return x


@contextlib.contextmanager
def _sites_replaced(model: nn.Module, feeds: dict[str, list]):
    originals = {site: model.get_submodule(site) for site in feeds}
    for site, calibrators in feeds.items():
        set_submodule(model, site, _Feed(calibrators))
    try:
        yield
    finally:
        for site, quantizer in originals.items():
            set_submodule(model, site, quantizer)


def set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    """Put `module` at `path` (the attribute of its parent)."""
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, module)


def _take(data: Iterable, limit: int | None) -> Iterator:
    for index, batch in enumerate(data):
        if limit is not None and index >= limit:
            return
        yield batch


def _length(data) -> int | None:
    try:
        return len(data)
    except TypeError:
        return None


def model_device(model: nn.Module) -> torch.device:
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


@contextlib.contextmanager
def disable_quantization(module: nn.Module):
    """Within the block, every quantizer under `module` is an identity.

    The previous modes are restored on exit.
    """
    with _set_mode(module, QuantMode.DISABLED):
        yield module


@contextlib.contextmanager
def enable_quantization(module: nn.Module):
    """Within the block, every quantizer under `module` quantizes (it needs an amax).

    The previous modes are restored on exit.
    """
    with _set_mode(module, QuantMode.QUANTIZING):
        yield module


@contextlib.contextmanager
def _set_mode(module: nn.Module, mode: QuantMode):
    saved = {quantizer: quantizer.mode for _, quantizer in iter_quantizers(module)}
    for quantizer in saved:
        quantizer.mode = mode
    try:
        yield
    finally:
        for quantizer, previous in saved.items():
            quantizer.mode = previous
