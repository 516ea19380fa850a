"""The ONNX Runtime backend: an ONNX model as a callable on torch tensors, its
Predictor, and interleaved CPU timing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from yoloq.errors import YoloqError
from yoloq.runtime.bench import BenchResult, benchmark_onnx
from yoloq.runtime.predictor import Backend, Predictor, export_metadata, exported_predictor


def default_providers() -> list[str]:
    """CUDA when ONNX Runtime has it and a GPU is present, else the CPU."""
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available and torch.cuda.is_available():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OrtModel:
    """`OrtModel("model.onnx")(images)` returns the first output as a torch tensor.

    threads: intra-op threads (None: ONNX Runtime's default, all cores).
    optimized_path: where to save the graph after ONNX Runtime's optimisations,
        to see which nodes it fused (e.g. QLinearConv).
    """

    def __init__(self, path: str | Path, providers: list[str] | None = None,
                 threads: int | None = None, optimized_path: str | Path | None = None):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no ONNX model at {path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if optimized_path:
            options.optimized_model_filepath = str(optimized_path)
        self.path = path
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=providers or default_providers())
        except Exception as error:  # ONNX Runtime's exception types are not public
            reason = (str(error).splitlines() or [type(error).__name__])[0]
            raise YoloqError(f"{path}: ONNX Runtime cannot load it ({reason})") from None
        self.input_name = self.session.get_inputs()[0].name
        # FP16 exports with --fp16-io take half-precision images.
        half = self.session.get_inputs()[0].type == "tensor(float16)"
        self.input_dtype = np.float16 if half else np.float32
        self.output_names = [output.name for output in self.session.get_outputs()]

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        """All outputs, as numpy arrays."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(images)})

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().cpu().numpy().astype(self.input_dtype, copy=False)
        return torch.from_numpy(self.run(array)[0]).float()


class OnnxRuntimeBackend(Backend):
    """ONNX files in ONNX Runtime: evaluated on the CPU (or CUDA when asked and present),
    timed on the CPU with every model interleaved."""

    name = "onnxruntime"
    suffixes = (".onnx",)

    def load(self, path: Path, device: str | None = None) -> Predictor:
        path = Path(path)
        if not path.is_file():
            raise YoloqError(f"ONNX model not found: {path}")
        meta = export_metadata(path)
        cuda = (device or self.device).startswith("cuda")
        model = OrtModel(path, providers=default_providers() if cuda else ["CPUExecutionProvider"])
        return exported_predictor(model, meta, path, self.name)

    def bench(self, paths: Sequence[Path], batch_sizes: Sequence[int],
              img_size: int | None = None, **options) -> BenchResult:
        known = {key: options[key] for key in ("warmup", "iters", "threads") if key in options}
        return benchmark_onnx(list(paths), batch_sizes=tuple(batch_sizes), img_size=img_size,
                              **known)
