"""The OpenVINO backend: yoloq's ONNX exports on Intel's CPU runtime (any x86 CPU).

The same Q/DQ ONNX serves TensorRT and OpenVINO: the trt profile's inputs-only placement
(a QuantizeLinear / DequantizeLinear pair in front of each convolution's input and on
its weight) is the pattern OpenVINO's CPU plugin folds into int8 convolutions. Every
model is compiled at the static shape of its input, one compiled model per shape:
handed a dynamic batch, OpenVINO's CPU kernels run 35-50% slower.

Before OpenVINO reads an ONNX, its signed activation grids (int8, zero point 0: what
TensorRT requires) are rewritten to the same grid in uint8 with zero point 128
(`unsigned_activations`): the same numbers, but on OpenVINO 2026.4's CPU plugin (AMD EPYC,
AVX-512 VNNI) the signed form gave wrong results after a Concat (demo model: mAP 29.2
against ONNX Runtime's 44.2 on the same file; 44.0 with the rewrite).

OpenVINO is the optional extra `yoloq[openvino]`, imported only here, when used.
"""

from __future__ import annotations

import functools
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from yoloq.errors import YoloqError
from yoloq.export.onnx import constant_values, readers_of
from yoloq.runtime.bench import BenchResult, Runner, random_images, time_runners
from yoloq.runtime.predictor import Backend, Predictor, export_metadata, exported_predictor

# The inference precision hint: "default" is OpenVINO's choice (bf16 on CPUs with BF16
# or AMX, f32 elsewhere), "f32" and "bf16" ask for one. It governs the float layers;
# the quantized convolutions run in int8 whatever it says.
PRECISIONS = ("default", "f32", "bf16")
INSTALL_HINT = "pip install 'yoloq[openvino]'"
INT8 = ("i8", "u8")  # the runtime precisions of an int8 kernel


def _openvino():
    try:
        import openvino
    except ImportError as error:
        raise YoloqError(f"OpenVINO is not installed ({error}); {INSTALL_HINT}") from None
    return openvino


@functools.cache
def shared_core():
    """One OpenVINO Core per process, as OpenVINO advises: each holds its plugins, and
    several of them created and destroyed in one process crashed it (a segfault in a
    later subprocess call)."""
    return _openvino().Core()


def compile_config(precision: str = "default", threads: int | None = None) -> dict:
    """The CPU plugin's properties: one request at a time (latency), the precision hint."""
    if precision not in PRECISIONS:
        raise YoloqError(f"OpenVINO precision {precision!r}: expected one of "
                         f"{', '.join(PRECISIONS)}")
    config = {"PERFORMANCE_HINT": "LATENCY"}
    if precision != "default":
        config["INFERENCE_PRECISION_HINT"] = precision
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


class OpenVinoModel:
    """`OpenVinoModel("model.onnx")(images)` returns the first output as a torch tensor.

    Compiled lazily for each input shape it meets (evaluation's last batch is smaller,
    rectangular batches differ in height), each at that static shape."""

    def __init__(self, path: str | Path, precision: str = "default",
                 threads: int | None = None):
        ov = _openvino()
        self.path = Path(path)
        if not self.path.is_file():
            raise YoloqError(f"no model at {self.path}")
        self.core = shared_core()
        self.config = compile_config(precision, threads)
        try:
            self.model = self._read()
        except Exception as error:  # OpenVINO raises RuntimeError with a long trace
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise YoloqError(f"{self.path}: OpenVINO cannot read it ({reason})") from None
        if len(self.model.inputs) != 1:
            raise YoloqError(f"{self.path}: expected one image input, found "
                             f"{len(self.model.inputs)}")
        half = self.model.inputs[0].get_element_type() == ov.Type.f16
        self.input_dtype = np.float16 if half else np.float32
        self._requests: dict[tuple[int, ...], object] = {}

    def _read(self):
        if self.path.suffix != ".onnx":
            return self.core.read_model(str(self.path))
        proto = onnx.load(str(self.path))
        if not unsigned_activations(proto):
            return self.core.read_model(str(self.path))
        with tempfile.TemporaryDirectory() as folder:  # read in full before it is removed
            rewritten = Path(folder) / self.path.name
            onnx.save(proto, str(rewritten))
            return self.core.read_model(str(rewritten))

    def compiled(self, shape: Sequence[int]):
        """The compiled model for this input shape, compiled on first use."""
        return self.request(shape).get_compiled_model()

    def request(self, shape: Sequence[int]):
        shape = tuple(int(d) for d in shape)
        if shape not in self._requests:
            ov = _openvino()
            model = self.model.clone()
            model.reshape({model.inputs[0]: ov.PartialShape(list(shape))})
            compiled = self.core.compile_model(model, "CPU", self.config)
            self._requests[shape] = compiled.create_infer_request()
        return self._requests[shape]

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        """All outputs, as numpy arrays (copies: the request reuses its buffers)."""
        request = self.request(images.shape)
        request.infer({0: np.ascontiguousarray(images, dtype=self.input_dtype)})
        return [np.array(request.get_output_tensor(i).data)
                for i in range(len(request.model_outputs))]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().cpu().numpy()
        return torch.from_numpy(self.run(array)[0]).float()

    def precision_hint(self, shape: Sequence[int]) -> str:
        """The inference precision OpenVINO chose or was told, e.g. "bf16"."""
        value = self.compiled(shape).get_property("INFERENCE_PRECISION_HINT")
        return str(getattr(value, "to_string", lambda: value)())


def unsigned_activations(proto: onnx.ModelProto) -> int:
    """Rewrite, in place, each activation QuantizeLinear with an int8 zero point of 0 (and
    the DequantizeLinear nodes reading it) to uint8 with zero point 128: the same grid of
    values, [-128, 127] steps. Weights (a QuantizeLinear of a constant) stay int8, as
    OpenVINO's int8 kernels want them. Returns how many were rewritten."""
    graph = proto.graph
    values = constant_values(graph)
    constants = set(values) | {init.name for init in graph.initializer}  # external ones too
    zeros = {name: value.shape for name, value in values.items()
             if value.dtype == np.int8 and not value.any()}  # zero points
    readers = readers_of(graph)
    rewritten = 0
    for node in list(graph.node):
        if (node.op_type != "QuantizeLinear" or node.input[0] in constants or len(node.input) < 3
                or node.input[2] not in zeros):
            continue
        dequantizers = readers.get(node.output[0], [])
        if any(reader.op_type != "DequantizeLinear" for reader in dequantizers):
            continue
        name = f"{node.output[0]}_uint8_zero_point"
        shape = zeros[node.input[2]]
        graph.initializer.append(numpy_helper.from_array(np.full(shape, 128, np.uint8), name))
        for quantizer in (node, *dequantizers):
            quantizer.input[2] = name
        rewritten += 1
    return rewritten


def default_float_precision(hint: str = "default") -> str:
    """"bf16" or "fp32": what a float model runs in under this hint, on this CPU."""
    if hint != "default":
        return "bf16" if hint == "bf16" else "fp32"
    value = str(shared_core().get_property("CPU", "INFERENCE_PRECISION_HINT"))
    return "bf16" if "bf16" in value or "bfloat16" in value else "fp32"


def convolution_precisions(compiled) -> Counter:
    """How many convolutions of a compiled model's runtime graph run in each precision
    ({"u8": 55, "bf16": 3}): which ones OpenVINO's int8 kernels took."""
    counts = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if _rt_value(info, "layerType") == "Convolution":
            counts[_rt_value(info, "runtimePrecision").lower()] += 1
    return counts


def _rt_value(info, key: str) -> str:
    if key not in info:
        return ""
    value = info[key]
    return str(value.astype(str) if hasattr(value, "astype") else value)


def quantized_convolutions(onnx_path: str | Path) -> int:
    """The convolutions of a Q/DQ ONNX whose weight is read through a DequantizeLinear:
    the ones OpenVINO should run in int8."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    dequantized = {output for node in graph.node if node.op_type == "DequantizeLinear"
                   for output in node.output}
    return sum(1 for node in graph.node
               if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in dequantized)


def check_int8(model: OpenVinoModel, shape: Sequence[int], strict: bool = True) -> str:
    """"55/58 conv int8" for the report. Where OpenVINO left a quantized convolution of
    the ONNX in float (a Q/DQ pattern it did not fold: slow, and not what was asked),
    raises when `strict`, else says so in the note."""
    expected = quantized_convolutions(model.path) if model.path.suffix == ".onnx" else 0
    counts = convolution_precisions(model.compiled(shape))
    int8 = sum(counts[precision] for precision in INT8)
    note = f"{int8}/{sum(counts.values())} conv int8"
    if int8 >= expected:
        return note
    if strict:
        raise YoloqError(f"{model.path}: OpenVINO runs {int8} convolutions in int8, the ONNX "
                         f"quantizes {expected}: {dict(counts)}")
    return f"{note}, of {expected} quantized"


class OpenVinoBackend(Backend):
    """ONNX files (or OpenVINO IR .xml) on OpenVINO's CPU plugin, at static shapes; timed
    with every model interleaved, each checked for its quantized convolutions in int8
    (`bench(..., require_int8=True)` raises where one is not; otherwise its note says)."""

    name = "openvino"
    suffixes = (".xml",)  # an ONNX goes to ONNX Runtime unless this backend is named
    precision_hint = "default"

    def unavailable(self) -> str | None:
        try:
            _openvino()
        except YoloqError as error:
            return str(error)
        return None

    def precision(self, job) -> str:
        """int8, or the precision OpenVINO runs float models in here (bf16 on CPUs with
        BF16 or AMX unless told otherwise)."""
        return "int8" if job.quantized else default_float_precision(self.precision_hint)

    def load(self, path: Path, device: str | None = None) -> Predictor:
        path = Path(path)
        if path.suffix != ".onnx":  # an IR carries no class names
            raise YoloqError(f"{path}: evaluation on OpenVINO takes a yoloq ONNX export")
        meta = export_metadata(path)
        return exported_predictor(OpenVinoModel(path, self.precision_hint), meta, path,
                                  self.name)

    def bench(self, paths: Sequence[Path], batch_sizes: Sequence[int],
              img_size: int | None = None, **options) -> BenchResult:
        warmup, iters = options.get("warmup", 10), options.get("iters", 50)
        precision = options.get("precision", self.precision_hint)
        models = [OpenVinoModel(path, precision, options.get("threads")) for path in paths]
        runners, notes, first_shapes = [], {}, []
        for model in models:
            runner, shapes = openvino_runner(model, batch_sizes, img_size)
            runners.append(runner)
            first_shapes.append(shapes[batch_sizes[0]])
            notes[runner.name] = check_int8(model, first_shapes[-1],
                                            options.get("require_int8", False))
        # The runtime's settings as the baseline (the first model) was compiled with them.
        result = time_runners(runners, batch_sizes, warmup, iters,
                              options.get("show_progress", True),
                              {"threads": options.get("threads"), "img_size": img_size,
                               **openvino_settings(models[0], first_shapes[0])})
        return with_notes(result, notes)


def openvino_runner(model: OpenVinoModel, batch_sizes: Sequence[int],
                    img_size: int | None = None) -> tuple[Runner, dict[int, tuple]]:
    """A Runner of `model` (compiled per batch size, at that static shape) and the shapes."""
    dims = model.model.inputs[0].get_partial_shape()
    fixed = [None if d.is_dynamic else d.get_length() for d in dims]
    if len(fixed) != 4:
        raise YoloqError(f"{model.path}: expected an image input [batch, 3, H, W]")
    if (fixed[2] is None or fixed[3] is None) and img_size is None:
        raise YoloqError(f"{model.path}: the input's height and width are dynamic; give "
                         "img_size (--img)")
    height, width = fixed[2] or img_size, fixed[3] or img_size
    arrays = random_images(batch_sizes, fixed[1] or 3, height, width, model.input_dtype)
    shapes = {batch: arrays[batch].shape for batch in batch_sizes}
    requests = {batch: model.request(shapes[batch]) for batch in batch_sizes}
    return Runner(str(model.path), lambda batch: requests[batch].infer({0: arrays[batch]})), shapes


def openvino_settings(model: OpenVinoModel, shape: Sequence[int]) -> dict:
    """What a benchmark JSON records of the runtime: version, precision, properties."""
    ov = _openvino()
    compiled = model.compiled(shape)
    return {"backend": "openvino", "openvino": ov.get_version(),
            "precision_hint": model.precision_hint(shape),
            "inference_threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
            "performance_hint": str(compiled.get_property("PERFORMANCE_HINT"))}


def with_notes(result: BenchResult, notes: dict[str, str]) -> BenchResult:
    stats = tuple(replace(stats, note=notes.get(stats.model, "")) for stats in result.stats)
    return replace(result, stats=stats)
