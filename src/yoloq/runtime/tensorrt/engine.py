"""Run a TensorRT engine on torch CUDA tensors.

TensorRT's Python API reads and writes device memory by address, so torch tensors
serve as the engine's buffers: no pycuda or cuda-python is needed. One execution
context and one CUDA stream per runner.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from yoloq.errors import YoloqError
from yoloq.runtime.tensorrt.api import TensorRT, TensorRTUnavailable, load_tensorrt
from yoloq.runtime.tensorrt.build import metadata_file

# TensorRT DataType names -> torch dtypes (the I/O types yoloq's engines can have).
TORCH_DTYPES = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "BF16": torch.bfloat16,
    "INT8": torch.int8,
    "UINT8": torch.uint8,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "BOOL": torch.bool,
}
PAD_VALUE = 114 / 255  # letterbox grey, as the data loaders pad
Shape = tuple[int, ...]


@dataclass(frozen=True)
class ShapeRange:
    """The smallest and largest input an engine's optimisation profile accepts, and the
    shape it was tuned for."""

    low: Shape
    opt: Shape
    high: Shape


def read_engine_metadata(path: str | Path) -> dict:
    """model.engine.json, written by `yoloq trt build` (class names, image size, ...)."""
    meta_path = metadata_file(Path(path))
    if not meta_path.is_file():
        raise YoloqError(
            f"{path}: no {meta_path.name} beside it; build engines with `yoloq trt build`, "
            "which writes the class names and input size there"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise YoloqError(f"{meta_path}: not readable JSON ({error}); rebuild the engine with "
                         "`yoloq trt build`") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("names"), list):
        raise YoloqError(f"{meta_path}: no class names in it; rebuild the engine with "
                         "`yoloq trt build`")
    return meta


class EngineRunner:
    """`EngineRunner("model.engine")(images)`: the first output, float32, on the GPU.

    `bind(images)` and `execute()` are the two halves, for benchmarks that time
    only the execution (and capture it in a CUDA graph).
    """

    def __init__(self, path: str | Path, device: str = "cuda", tensorrt: TensorRT | None = None):
        path = Path(path)
        if not path.is_file():
            raise YoloqError(f"TensorRT engine not found: {path}")
        if path.stat().st_size == 0:  # said before TensorRT is needed to tell
            raise YoloqError(f"{path}: empty file, not a TensorRT engine")
        try:
            self.api = tensorrt or load_tensorrt()
        except TensorRTUnavailable as error:  # the same error, naming the file it stopped at
            raise TensorRTUnavailable(f"{path}: cannot run it here: {error}") from None
        trt = self.api.module
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise YoloqError(f"TensorRT engines run on an NVIDIA GPU, not on {device}")
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise YoloqError(
                f"{path}: TensorRT {self.api.version_text} cannot load it (engines only run "
                "with the TensorRT version and GPU model that built them)"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) != mode]
        if len(self.inputs) != 1:
            raise YoloqError(f"{path}: expected one image input, found {self.inputs}")
        self.input_name = self.inputs[0]
        self.input_dtype = torch_dtype(self.engine.get_tensor_dtype(self.input_name))
        self.shapes = self._shape_range()
        self.stream = torch.cuda.Stream(self.device)
        self.buffers: dict[str, torch.Tensor] = {}

    def _shape_range(self) -> ShapeRange:
        shape = tuple(self.engine.get_tensor_shape(self.input_name))
        if all(d > 0 for d in shape):
            return ShapeRange(shape, shape, shape)
        low, opt, high = self.engine.get_tensor_profile_shape(self.input_name, 0)
        return ShapeRange(tuple(low), tuple(opt), tuple(high))

    def bind(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Set the input shape and every tensor address; the outputs, allocated here."""
        images = images.to(self.device, self.input_dtype).contiguous()
        self.context.set_input_shape(self.input_name, tuple(images.shape))
        self.context.set_tensor_address(self.input_name, images.data_ptr())
        self.buffers = {self.input_name: images}  # alive while the engine reads it
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = torch_dtype(self.engine.get_tensor_dtype(name))
            self.buffers[name] = torch.empty(shape, dtype=dtype, device=self.device)
            self.context.set_tensor_address(name, self.buffers[name].data_ptr())
        return self.buffers

    def execute(self) -> None:
        """Enqueue one inference on the runner's stream (asynchronous)."""
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise YoloqError("TensorRT failed to enqueue the engine (its log above says why)")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        buffers = self.bind(images)
        self.stream.wait_stream(torch.cuda.current_stream(self.device))  # the input is ready
        self.execute()
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        return buffers[self.outputs[0]].float()


def torch_dtype(trt_dtype) -> torch.dtype:
    name = getattr(trt_dtype, "name", str(trt_dtype).rsplit(".", 1)[-1])
    if name not in TORCH_DTYPES:
        raise YoloqError(f"TensorRT tensor type {name} has no torch equivalent here")
    return TORCH_DTYPES[name]


def run_in_profile(
    run: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    shapes: ShapeRange,
    pad_value: float = PAD_VALUE,
) -> torch.Tensor:
    """`run(images)` within the engine's shape range, with the same results.

    Batches above the largest are split and those below the smallest filled with
    copies (their outputs dropped). Images smaller than the smallest height/width
    are padded at the bottom and right, in letterbox grey: boxes are in input
    pixels from the top left, so they do not move.
    """
    batch, _, height, width = images.shape
    max_h, max_w = shapes.high[2], shapes.high[3]
    if height > max_h or width > max_w:
        raise YoloqError(
            f"images of {height}x{width} exceed the engine's largest input {max_h}x{max_w}: "
            f"build it with `yoloq trt build --dynamic --img {max(height, width)}`"
        )
    pad_h, pad_w = max(0, shapes.low[2] - height), max(0, shapes.low[3] - width)
    if pad_h or pad_w:
        images = F.pad(images, (0, pad_w, 0, pad_h), value=pad_value)
    outputs = []
    for start in range(0, batch, shapes.high[0]):
        chunk = images[start : start + shapes.high[0]]
        count = len(chunk)
        if count < shapes.low[0]:
            filler = chunk[-1:].expand(shapes.low[0] - count, *chunk.shape[1:])
            chunk = torch.cat([chunk, filler])
        outputs.append(run(chunk)[:count])
    return torch.cat(outputs)
