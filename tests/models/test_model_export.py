"""The eval model exports to ONNX (TorchScript exporter, opset 13, dynamic batch)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from yoloq.models import build_model


@pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.onnx")
def test_onnx_export_with_dynamic_batch_matches_torch(tmp_path, randomize_batch_norm):
    model = randomize_batch_norm(build_model("yolov7-tiny")).eval().fuse()
    path = tmp_path / "yolov7-tiny.onnx"
    torch.onnx.export(
        model,
        (torch.rand(1, 3, 160, 160),),
        str(path),
        opset_version=13,
        input_names=["images"],
        output_names=["predictions"],
        dynamic_axes={"images": {0: "batch"}, "predictions": {0: "batch"}},
        dynamo=False,
    )
    x = torch.rand(3, 3, 160, 160)
    with torch.no_grad():
        expected = model(x)[0].numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(["predictions"], {"images": x.numpy()})
    assert actual.shape == expected.shape == (3, 3 * (20 * 20 + 10 * 10 + 5 * 5), 85)
    assert np.abs(actual - expected).max() <= 1e-3 * np.abs(expected).max()
