"""`quantize(model, config)`: put quantizers into a model, in place, by rules."""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch.nn as nn
from rich.table import Table

from yoloq.console import render_text
from yoloq.quant.modules import DEFAULT_QUANT_MODULES, OUTPUT_QUANT_MODULES
from yoloq.quant.spec import QuantConfig, QuantSpec


@dataclass(frozen=True)
class SummaryRow:
    path: str
    module_type: str
    input_spec: QuantSpec | None
    weight_spec: QuantSpec | None
    ignored_by: str | None = None
    output_spec: QuantSpec | None = None


@dataclass
class QuantSummary:
    """What `quantize` did: one row per quantizable module, quantized or ignored."""

    rows: list[SummaryRow] = field(default_factory=list)

    @property
    def quantized(self) -> list[SummaryRow]:
        return [row for row in self.rows if row.ignored_by is None]

    @property
    def ignored_paths(self) -> list[str]:
        return [row.path for row in self.rows if row.ignored_by is not None]

    def table(self):
        """A rich Table of the rows."""
        table = Table(title=f"Quantized {len(self.quantized)} of {len(self.rows)} modules")
        outputs = any(row.output_spec for row in self.rows)
        columns = ("module", "type", "input", "weight") + (("output",) if outputs else ())
        for column in (*columns, "ignored by"):
            table.add_column(column)
        for row in self.rows:
            cells = [row.path, row.module_type, describe_spec(row.input_spec),
                     describe_spec(row.weight_spec)]
            if outputs:
                cells.append(describe_spec(row.output_spec))
            table.add_row(*cells, row.ignored_by or "")
        return table

    def __str__(self) -> str:
        return render_text(self.table())


def describe_spec(spec: QuantSpec | None) -> str:
    """Short text for a spec, e.g. 'int8 per-tensor' or 'int7 per-channel(0)'."""
    if spec is None:
        return "-"
    dtype = "uint" if spec.unsigned else "int"
    kind = "per-tensor" if spec.axis is None else f"per-channel({spec.axis})"
    grid = " asymmetric" if spec.asymmetric else ""
    return f"{dtype}{spec.num_bits}{grid} {kind}"


def quantize(
    model: nn.Module,
    config: QuantConfig | None = None,
    module_map: Mapping[type[nn.Module], type[nn.Module]] | None = None,
) -> tuple[nn.Module, QuantSummary]:
    """Replace every module whose type is in the map by its quantized version, in place.

    Module paths, weights and attributes are kept. `module_map` adds to (or
    overrides) `DEFAULT_QUANT_MODULES`. Returns the model and a summary; quantizers
    start uncalibrated, so run `calibrate` next.

    Example::

        model, summary = quantize(resnet18(), QuantConfig(ignore=[r"fc$"]))
        print(summary)
    """
    config = config or QuantConfig()
    mapping = {**DEFAULT_QUANT_MODULES, **(module_map or {})}
    if config.output_spec is not None:
        mapping = {**OUTPUT_QUANT_MODULES, **mapping}
    summary = QuantSummary()
    for path, module in list(model.named_modules()):
        quant_class = mapping.get(type(module))
        if quant_class is None:
            continue
        reason = config.ignored_by(path, module)
        if reason is not None:
            summary.rows.append(SummaryRow(path, type(module).__name__, None, None, reason))
            continue
        input_spec, weight_spec = config.specs_for(path, quant_class.default_weight_axis)
        float_type = type(module).__name__
        quantized = quant_class.from_float(module, path, input_spec, weight_spec,
                                           config.output_spec_for(path))
        if quantized is not module:
            _replace_submodule(model, path, quantized)
        summary.rows.append(_summary_row(path, float_type, quantized))
    _warn_unused_ignores(config, [row.path for row in summary.rows])
    return model, summary


def _summary_row(path: str, float_type: str, module: nn.Module) -> SummaryRow:
    def spec(*names: str) -> QuantSpec | None:
        quantizer = next((getattr(module, n) for n in names if hasattr(module, n)), None)
        return quantizer.spec if quantizer is not None else None

    return SummaryRow(path, float_type, spec("input_quantizer", "input0_quantizer"),
                      spec("weight_quantizer"), output_spec=spec("output_quantizer"))


def _replace_submodule(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, new)


def _warn_unused_ignores(config: QuantConfig, paths: list[str]) -> None:
    for rule in config.ignore:
        if isinstance(rule, str) and not any(re.match(rule, path) for path in paths):
            warnings.warn(f"ignore pattern {rule!r} matches no quantizable module", stacklevel=3)

