"""Record a model's dataflow by running it once: which ops read and write which tensors,
and which tensor each activation quantizer reads.

Why a recorded run and not `torch.fx.symbolic_trace`: YOLO heads unpack shapes
(`bs, _, ny, nx = x.shape`) and models loop over layers by their `.f` attributes,
which symbolic tracing cannot follow without per-model leaf lists. A run under a
`TorchFunctionMode` sees exactly the ops that `torch.onnx.export` (itself a
recording tracer) will put in the ONNX, for any Python control flow, and costs one
forward pass at a small input size.

A tensor is identified by `(id(tensor), tensor._version)`: the version tells an
in-place op's output from its input. Every tensor seen is kept alive until the
trace ends, so that no id is reused.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from yoloq.graph.ops import LIST_INPUT_TORCH, PAD_TORCH
from yoloq.quant import TensorQuantizer, disable_quantization, iter_quantizers

TensorKey = tuple[int, int]


@dataclass(frozen=True)
class OpRecord:
    """One call of a torch function or tensor method: its name, the tensors it reads
    (`data`: the ones its values come from) and the tensors it returns."""

    name: str
    data: tuple[TensorKey, ...]
    outputs: tuple[TensorKey, ...]
    mode: str | None = None  # a resample's mode ("nearest", ...), a pad's ("constant", ...)
    fill: float | None = None  # a pad's constant value


@dataclass(frozen=True)
class Dataflow:
    """The ops of one forward pass in call order, and the tensors each activation
    quantizer read (a quantizer called several times, like SPPF's shared max-pool,
    reads several tensors). `quantizer_order` is module order, for deterministic
    leaders."""

    ops: tuple[OpRecord, ...]
    quantizer_reads: dict[str, tuple[TensorKey, ...]]
    quantizer_order: tuple[str, ...]


class _Recorder(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.ops: list[OpRecord] = []
        self.alive: list[torch.Tensor] = []

    def key(self, tensor: torch.Tensor) -> TensorKey:
        self.alive.append(tensor)
        return id(tensor), tensor._version

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        data = tuple(self.key(t) for t in _data_inputs(name, args, kwargs))
        result = func(*args, **kwargs)
        outputs = tuple(self.key(t) for t in _tensors(result))
        if outputs:
            self.ops.append(OpRecord(name, data, outputs, *_mode_and_fill(name, args, kwargs)))
        return result


def _argument(args: tuple, kwargs: dict, index: int, name: str, default=None):
    """An argument given by position or by keyword."""
    return args[index] if len(args) > index else kwargs.get(name, default)


def _mode_and_fill(name: str, args: tuple, kwargs: dict) -> tuple[str | None, float | None]:
    """The arguments that decide whether a resample or a pad copies values:
    F.interpolate(input, size, scale_factor, mode="nearest", ...)'s mode; the ATen
    upsample_nearest*d ops are nearest by name; F.pad(input, pad, mode="constant",
    value=None)'s mode and value (None pads zeros). (None, None) for other ops."""
    if name == "interpolate":
        return _argument(args, kwargs, 3, "mode", "nearest"), None
    if name.startswith("upsample_nearest"):
        return "nearest", None
    if name in PAD_TORCH:
        value = _argument(args, kwargs, 3, "value")
        return _argument(args, kwargs, 2, "mode", "constant"), float(value or 0.0)
    return None, None


def _data_inputs(name: str, args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """The tensors an op's values come from: every tensor of a concatenation's (or
    stack's) list, given by position or as `tensors=`; otherwise the first tensor
    argument, or `input=` (shapes, indices and weights are not data)."""
    if name in LIST_INPUT_TORCH:
        return list(_tensors(_argument(args, kwargs, 0, "tensors", ())))
    first = next(_tensors(args), None)
    if first is None and isinstance(kwargs.get("input"), torch.Tensor):
        first = kwargs["input"]
    return [first] if first is not None else []


def _tensors(value) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def trace_dataflow(model: nn.Module, example: torch.Tensor) -> Dataflow:
    """Run `model(example)` once in eval mode, quantizers off, and record its dataflow.

    Weight quantizers (their input is a Parameter) and per-channel quantizers are
    left out: only per-tensor activation quantizers can share a scale.
    """
    recorder = _Recorder()
    reads: dict[str, list[TensorKey]] = {}
    order = [path for path, q in iter_quantizers(model) if q.spec.axis is None]
    handles = [
        _watch(q, path, recorder, reads)
        for path, q in iter_quantizers(model)
        if q.spec.axis is None
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), disable_quantization(model), recorder:
            model(example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return Dataflow(tuple(recorder.ops), {p: tuple(k) for p, k in reads.items()}, tuple(order))


def _watch(quantizer: TensorQuantizer, path: str, recorder: _Recorder, reads: dict):
    def hook(module, inputs):
        tensor = inputs[0]
        if not isinstance(tensor, nn.Parameter):
            reads.setdefault(path, []).append(recorder.key(tensor))

    return quantizer.register_forward_pre_hook(hook)
