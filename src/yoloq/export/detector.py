"""Export of YOLO detectors: the official input/output layout, metadata that makes the
.onnx self-describing, and the check of ONNX Runtime against torch after export."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import torch
import torch.nn as nn

from yoloq.export.onnx import export_onnx


class _FirstOutput(nn.Module):
    """A detector's eval output is (predictions, raw levels); the export keeps predictions."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        output = self.model(images)
        return output[0] if isinstance(output, (tuple, list)) else output


def export_detector(
    model: nn.Module,
    path: str | Path,
    img_size: int | tuple[int, int],
    opset: int = 13,
    dynamic: bool = True,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Export a YOLO detector: input `images` [batch, 3, H, W] (0..1, RGB), output
    `output` [batch, anchors, 5 + nc] as the official export with the grid.

    `dynamic`: batch, height and width are dynamic (so that evaluation can feed
    YOLOv7's rectangular batches); otherwise the shape is fixed at batch 1.

    `metadata` (e.g. names, img_size, profile) is stored in the model's
    metadata_props, so that the .onnx alone says how to run it.
    """
    height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
    device = next(model.parameters()).device
    example = torch.zeros(1, 3, height, width, device=device)
    axes = {"images": {0: "batch", 2: "height", 3: "width"},
            "output": {0: "batch", 1: "anchors"}} if dynamic else None
    wrapper = _FirstOutput(model).train(model.training)  # export restores this mode after
    path = export_onnx(wrapper, path, example, opset, dynamic_batch=False, dynamic_axes=axes)
    if metadata:
        proto = onnx.load(str(path))
        onnx.helper.set_model_props(proto, {k: str(v) for k, v in metadata.items()})
        onnx.save(proto, str(path))
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata_props of an ONNX file (without loading its weights)."""
    proto = onnx.load(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in proto.metadata_props}


def detector_metadata(names, img_size: int, stride: int, precision: str,
                      profile: str | None) -> dict[str, str]:
    """What a runtime needs to know to run an exported detector."""
    return {"names": json.dumps(list(names)), "img_size": str(img_size), "stride": str(stride),
            "precision": precision, "profile": profile or "", "producer": "yoloq"}


def export_and_check(predictor, out: str | Path, img_size: int, opset: int = 13,
                     dynamic: bool = True) -> dict:
    """Export a Predictor's torch model and compare ONNX Runtime's output with torch's.

    Returns the max absolute error over the output and that error in steps of the
    score grid (1/127), over a batch of smooth random images.
    """
    from yoloq.runtime import OrtModel

    metadata = detector_metadata(predictor.names, img_size, predictor.stride,
                                 predictor.precision, predictor.profile)
    path = export_detector(predictor.model, out, img_size, opset, dynamic, metadata)
    generator = torch.Generator().manual_seed(0)
    low = torch.rand(2 if dynamic else 1, 3, img_size // 8, img_size // 8,
                     generator=generator)
    images = nn.functional.interpolate(low, size=(img_size, img_size), mode="bilinear")
    expected = predictor(images).float().cpu()
    actual = OrtModel(path, providers=["CPUExecutionProvider"])(images)
    scores_error = (actual[..., 4:] - expected[..., 4:]).abs().max().item()
    return {"path": str(path), "max_abs_error": (actual - expected).abs().max().item(),
            "max_error_steps": scores_error * 127}
