"""Run an ONNX model in ONNX Runtime as a callable on torch tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def default_providers() -> list[str]:
    """CUDA when ONNX Runtime has it and a GPU is present, else the CPU."""
    import onnxruntime as ort

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
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no ONNX model at {path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if optimized_path:
            options.optimized_model_filepath = str(optimized_path)
        self.path = path
        self.session = ort.InferenceSession(str(path), options,
                                            providers=providers or default_providers())
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
