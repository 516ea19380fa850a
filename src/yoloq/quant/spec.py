"""What a quantizer does (`QuantSpec`) and which modules get which (`QuantConfig`).

Both are frozen dataclasses that validate themselves and round-trip through
plain dicts (and so JSON), so every output can carry the config that made it.

Precedence, for each quantizable module path:
  1. `ignore`: if any ignore rule matches, the module stays float.
  2. `rules`: a rule whose pattern equals the path exactly wins; otherwise the
     first rule (in order) whose regex `re.match`-es the path.
     A rule may itself ignore (`ignore=True`) or override the input and/or
     weight spec; fields it leaves as None fall through to the defaults.
  3. the config's defaults (`input_spec`, `weight_spec`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch.nn as nn

CALIBRATORS = ("max", "histogram")
ERROR_SPACES = ("linear", "sigmoid")  # see yoloq.quant.amax.ERROR_SPACES

# A rule that says "leave this module float": a regex, or a callable on (path, module).
IgnoreRule = str | Callable[[str, nn.Module], bool]


@dataclass(frozen=True)
class QuantSpec:
    """How one tensor is quantized.

    The grid is always symmetric with zero point 0 in signed terms: scale is
    amax / (2**(num_bits-1) - 1), so values inside +-amax land on +-127 (8 bits),
    as TensorRT expects. `unsigned=True` only changes the storage type of the
    exported tensor to uint8 with zero point 2**(num_bits-1) (same grid, shifted),
    which is what ONNX Runtime's u8s8 CPU kernels want.

    asymmetric: the grid spans [amin, amax] in 2**num_bits - 1 steps, stored unsigned with
    the zero point where 0.0 falls; each end is calibrated on its own side of the
    tensor's values (max: the lowest and highest seen; a histogram method: its threshold
    on the negative and on the positive counts), amin at most 0 so that 0.0 stays on the
    grid. On a tensor that is mostly positive (the output of a SiLU, a LeakyReLU, a
    sigmoid) that is up to twice the resolution of the symmetric grid, as ONNX Runtime's
    own quantizer has it. For ONNX Runtime and OpenVINO only (TensorRT's int8 is
    symmetric): needs `unsigned`, per tensor.
    """

    num_bits: int = 8
    axis: int | None = None
    unsigned: bool = False
    calibrator: str = "histogram"
    num_bins: int = 2048
    error_space: str = "linear"
    asymmetric: bool = False

    def __post_init__(self):
        if not 2 <= self.num_bits <= 8:
            raise ValueError(f"num_bits must be in 2..8, got {self.num_bits}")
        if self.axis is not None and (not isinstance(self.axis, int) or self.axis < 0):
            raise ValueError(f"axis must be None or a non-negative int, got {self.axis!r}")
        if self.calibrator not in CALIBRATORS:
            raise ValueError(f"calibrator must be one of {CALIBRATORS}, got {self.calibrator!r}")
        if self.error_space not in ERROR_SPACES:
            raise ValueError(f"error_space must be one of {ERROR_SPACES}, got "
                             f"{self.error_space!r}")
        if self.num_bins < 128:
            raise ValueError(f"num_bins must be at least 128, got {self.num_bins}")
        if self.axis is not None and self.calibrator != "max":
            raise ValueError("per-channel quantizers (axis set) support only calibrator='max'")
        if self.asymmetric and not (self.unsigned and self.axis is None):
            raise ValueError("an asymmetric grid needs unsigned=True and a per-tensor axis")

    @property
    def max_bound(self) -> int:
        """Largest integer of the symmetric grid: 127 for 8 bits."""
        return 2 ** (self.num_bits - 1) - 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantSpec:
        return cls(**_known_fields(cls, data))


def weight_spec_for_axis(axis: int, num_bits: int = 8) -> QuantSpec:
    """Per-output-channel weight spec, calibrated by max."""
    return QuantSpec(num_bits=num_bits, axis=axis, calibrator="max")


@dataclass(frozen=True)
class QuantRule:
    """An override for the modules whose path matches `pattern` (a regex)."""

    pattern: str
    input_spec: QuantSpec | None = None
    weight_spec: QuantSpec | None = None
    ignore: bool = False
    output_spec: QuantSpec | None = None  # for modules the config quantizes at the output

    def __post_init__(self):
        _compile(self.pattern)
        if self.ignore and (self.input_spec or self.weight_spec or self.output_spec):
            raise ValueError(f"rule {self.pattern!r}: an ignore rule cannot also set specs")

    def matches(self, path: str) -> bool:
        return re.match(self.pattern, path) is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "pattern": self.pattern,
            "input_spec": self.input_spec.to_dict() if self.input_spec else None,
            "weight_spec": self.weight_spec.to_dict() if self.weight_spec else None,
            "ignore": self.ignore,
            "output_spec": self.output_spec.to_dict() if self.output_spec else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantRule:
        return cls(
            pattern=data["pattern"],
            input_spec=_spec_or_none(data.get("input_spec")),
            weight_spec=_spec_or_none(data.get("weight_spec")),
            ignore=bool(data.get("ignore", False)),
            output_spec=_spec_or_none(data.get("output_spec")),
        )


@dataclass(frozen=True)
class QuantConfig:
    """Which modules are quantized, and how.

    input_spec: default spec of activation (input) quantizers.
    weight_spec: default weight spec; None means per output channel of each
        module (axis 0 for Conv/Linear, 1 for ConvTranspose) with `weight_bits`
        bits, calibrated by max.
    weight_bits: bits of the default weight spec (7 avoids the int8 saturation of
        ONNX Runtime's kernels on CPUs without VNNI).
    output_spec: when set, quantized modules also quantize their outputs, and
        activations and resampling modules are quantized at their output, so that
        every tensor between two int8 ops is quantized (ONNX Runtime's QLinear
        kernels need that; TensorRT does not).
    ignore: regexes (matched with `re.match` against the module path) or
        callables `(path, module) -> bool`; a matching module stays float.
    rules: per-pattern overrides, see the module docstring for precedence.

    Example: keep YOLOv7's detection convs float and use 7-bit weights elsewhere::

        QuantConfig(ignore=[r"model\\.105\\.m\\."], weight_spec=QuantSpec(num_bits=7, axis=0,
                    calibrator="max"))
    """

    input_spec: QuantSpec = field(default_factory=QuantSpec)
    weight_spec: QuantSpec | None = None
    ignore: tuple[IgnoreRule, ...] = ()
    rules: tuple[QuantRule, ...] = ()
    weight_bits: int = 8
    output_spec: QuantSpec | None = None

    def __post_init__(self):
        if not 2 <= self.weight_bits <= 8:
            raise ValueError(f"weight_bits must be in 2..8, got {self.weight_bits}")
        # Accept a single rule or any sequence; store tuples so the config is hashable-ish
        # and cannot be mutated behind the caller's back.
        ignore = self.ignore
        if isinstance(ignore, str) or callable(ignore):
            ignore = (ignore,)
        object.__setattr__(self, "ignore", tuple(ignore))
        object.__setattr__(self, "rules", tuple(self.rules))
        for rule in self.ignore:
            if isinstance(rule, str):
                _compile(rule)
            elif not callable(rule):
                raise ValueError(f"ignore rules must be regex strings or callables, got {rule!r}")
        for rule in self.rules:
            if not isinstance(rule, QuantRule):
                raise ValueError(f"rules must be QuantRule objects, got {rule!r}")

    def ignored_by(self, path: str, module: nn.Module) -> str | None:
        """The ignore rule (as text) that keeps `path` float, or None."""
        for rule in self.ignore:
            hit = rule(path, module) if callable(rule) else re.match(rule, path)
            if hit:
                return rule if isinstance(rule, str) else getattr(rule, "__name__", repr(rule))
        rule = self.rule_for(path)
        if rule is not None and rule.ignore:
            return rule.pattern
        return None

    def rule_for(self, path: str) -> QuantRule | None:
        """The override that applies to `path`: exact pattern first, then first regex match."""
        for rule in self.rules:
            if rule.pattern == path:
                return rule
        return next((rule for rule in self.rules if rule.matches(path)), None)

    def specs_for(self, path: str, default_weight_axis: int) -> tuple[QuantSpec, QuantSpec]:
        """(input spec, weight spec) for a module that is not ignored."""
        rule = self.rule_for(path)
        input_spec = (rule and rule.input_spec) or self.input_spec
        weight_spec = (rule and rule.weight_spec) or self.weight_spec
        return input_spec, weight_spec or weight_spec_for_axis(default_weight_axis,
                                                               self.weight_bits)

    def output_spec_for(self, path: str) -> QuantSpec | None:
        """The output spec of `path`: its rule's, else the config's (None: no output
        quantizers in this config)."""
        if self.output_spec is None:
            return None
        rule = self.rule_for(path)
        return (rule and rule.output_spec) or self.output_spec

    def resolved(self, ignored_paths: Sequence[str]) -> QuantConfig:
        """This config with every ignore rule replaced by the exact paths it ignored.

        Callables cannot be saved; the resolved list can, and rebuilds the same model.
        """
        exact = tuple(re.escape(path) + "$" for path in ignored_paths)
        return replace(self, ignore=exact)

    def to_dict(self) -> dict[str, Any]:
        if any(callable(rule) for rule in self.ignore):
            raise ValueError("a config with callable ignore rules cannot be saved; save "
                             "config.resolved(summary.ignored_paths) instead")
        return {
            "input_spec": self.input_spec.to_dict(),
            "weight_spec": self.weight_spec.to_dict() if self.weight_spec else None,
            "ignore": list(self.ignore),
            "rules": [rule.to_dict() for rule in self.rules],
            "weight_bits": self.weight_bits,
            "output_spec": self.output_spec.to_dict() if self.output_spec else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantConfig:
        return cls(
            input_spec=QuantSpec.from_dict(data.get("input_spec") or {}),
            weight_spec=_spec_or_none(data.get("weight_spec")),
            ignore=tuple(data.get("ignore") or ()),
            rules=tuple(QuantRule.from_dict(rule) for rule in data.get("rules") or ()),
            weight_bits=int(data.get("weight_bits", 8)),
            output_spec=_spec_or_none(data.get("output_spec")),
        )


def _compile(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ValueError(f"invalid regex {pattern!r}: {error}") from None


def _spec_or_none(data: dict[str, Any] | None) -> QuantSpec | None:
    return QuantSpec.from_dict(data) if data else None


def _known_fields(cls, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return dict(data)
