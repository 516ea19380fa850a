"""The OpenVINO backend on the demo model's exports: the same detections as ONNX Runtime,
every quantized convolution in int8, static shapes, timing next to ONNX Runtime.
Skipped where OpenVINO (the `openvino` extra, in `dev`) is not installed."""

from __future__ import annotations

import onnx
import pytest
import torch

pytest.importorskip("openvino")

from torchvision.ops import box_iou  # noqa: E402

from yoloq.data import create_val_loader, load_data_config, load_split  # noqa: E402
from yoloq.evaluate.nms import non_max_suppression  # noqa: E402
from yoloq.export import detector_metadata, export_detector  # noqa: E402
from yoloq.models import load_model  # noqa: E402
from yoloq.models.quantized import quantize_yolo  # noqa: E402
from yoloq.quant import calibrate  # noqa: E402
from yoloq.runtime import get_backend, load_predictor  # noqa: E402
from yoloq.runtime.openvino import (  # noqa: E402
    OpenVinoModel,
    check_int8,
    convolution_precisions,
    quantized_convolutions,
    unsigned_activations,
)

IMG = 320


@pytest.fixture(scope="module")
def images(demo_subset):
    config = load_data_config(demo_subset)
    loader = create_val_loader(load_split(config, "val"), IMG, 8, 32, workers=0)
    return next(iter(loader))[0][:8]


@pytest.fixture(scope="module")
def exports(tmp_path_factory, images):
    """The demo model's float ONNX and its trt-profile Q/DQ ONNX (max calibration)."""
    folder = tmp_path_factory.mktemp("openvino")
    model = load_model("demo").fuse().eval()
    meta = detector_metadata(model.names, IMG, 32, "fp32", None)
    float_onnx = export_detector(model, folder / "float.onnx", IMG, metadata=meta)
    quantized, *_ = quantize_yolo(load_model("demo").fuse().eval(), "trt")
    calibrate(quantized, [images], method="max", show_progress=False)
    meta = detector_metadata(model.names, IMG, 32, "int8", "trt")
    int8_onnx = export_detector(quantized, folder / "ptq_trt.onnx", IMG, metadata=meta)
    return float_onnx, int8_onnx


def detections(raw: torch.Tensor) -> list[torch.Tensor]:
    return non_max_suppression(raw, conf_thres=0.2, iou_thres=0.65)


def matched(a: torch.Tensor, b: torch.Tensor, iou: float, score: float) -> int:
    """How many of `a`'s confident detections (score >= 0.3: clear of the 0.2 threshold
    both ran with) `b` has too: same class, IoU >= `iou`, score within `score`."""
    a = a[a[:, 4] >= 0.3]
    if not len(a) or not len(b):
        return 0
    same = (box_iou(a[:, :4], b[:, :4]) >= iou) & (a[:, None, 5] == b[None, :, 5])
    same &= (a[:, None, 4] - b[None, :, 4]).abs() <= score
    return int(same.any(1).sum())


def assert_same_detections(a: list[torch.Tensor], b: list[torch.Tensor], iou: float,
                           score: float) -> int:
    """Image by image, every confident detection of either run is in the other's."""
    total = 0
    for boxes_a, boxes_b in zip(a, b, strict=True):
        confident = int((boxes_a[:, 4] >= 0.3).sum())
        assert matched(boxes_a, boxes_b, iou, score) == confident
        assert matched(boxes_b, boxes_a, iou, score) == int((boxes_b[:, 4] >= 0.3).sum())
        total += confident
    return total


def test_float_model_gives_the_same_detections_as_onnx_runtime(exports, images):
    path = exports[0]
    openvino = OpenVinoModel(path, precision="f32")  # f32: bf16 would round every layer
    count = assert_same_detections(detections(load_predictor(path)(images)),
                                   detections(openvino(images)), iou=0.99, score=1e-3)
    assert count > 10  # the demo model finds objects on these images


def test_int8_model_gives_nearly_the_same_detections(exports, images):
    """OpenVINO runs the Q/DQ model in integers, requantizing each layer's output itself;
    ONNX Runtime computes the trt profile's dequantized convolutions in float. Outputs
    off by a step here and there, over 60 layers, move boxes (IoU 0.85-0.99 with ONNX
    Runtime's, most above 0.98) and scores (by up to 0.08); every detection is still
    there. (Signed activations once gave 0 of 9 matches: see `unsigned_activations`.)"""
    path = exports[1]
    openvino = OpenVinoModel(path, precision="f32")
    count = assert_same_detections(detections(load_predictor(path)(images)),
                                   detections(openvino(images)), iou=0.8, score=0.1)
    assert count > 10


def test_signed_activations_are_rewritten_to_the_same_grid(exports):
    proto = onnx.load(str(exports[1]))
    quantizers = sum(1 for node in proto.graph.node if node.op_type == "QuantizeLinear")
    assert unsigned_activations(proto) > 40
    assert unsigned_activations(proto) == 0  # nothing signed is left
    zero_points = {init.name: init for init in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[2] in zero_points:
            assert zero_points[node.input[2]].data_type == onnx.TensorProto.UINT8
    assert quantizers == sum(1 for node in proto.graph.node if node.op_type == "QuantizeLinear")


def test_every_quantized_convolution_runs_in_int8(exports, images):
    _, int8_onnx = exports
    expected = quantized_convolutions(int8_onnx)
    assert expected > 40  # the demo model's trt profile quantizes nearly every conv
    model = OpenVinoModel(int8_onnx)
    counts = convolution_precisions(model.compiled(images.shape))
    int8 = counts["i8"] + counts["u8"]
    assert int8 >= expected
    float_counts = convolution_precisions(OpenVinoModel(exports[0]).compiled(images.shape))
    assert float_counts["i8"] + float_counts["u8"] == 0  # and none of the float model's
    assert check_int8(model, images.shape).startswith(f"{int8}/")


def test_compiled_at_static_shapes_one_per_shape(exports, images):
    model = OpenVinoModel(exports[0], precision="f32")
    model(images)
    model(images[:3])
    height, width = images.shape[2:]
    assert sorted(model._requests) == [(3, 3, height, width), (8, 3, height, width)]
    compiled = model.compiled(images[:3].shape)
    assert not compiled.inputs[0].get_partial_shape().is_dynamic
    assert model.precision_hint(images[:3].shape) in ("f32", "float32")


def test_bench_times_every_model_and_notes_int8(exports):
    result = get_backend("openvino").bench(list(exports), (1,), IMG, warmup=1, iters=3,
                                           precision="f32", show_progress=False)
    float_stats, int8_stats = (result.get(path, 1) for path in exports)
    assert int8_stats.note.endswith("conv int8") and not int8_stats.note.startswith("0/")
    assert float_stats.note.startswith("0/")
    assert result.settings["backend"] == "openvino" and result.settings["openvino"]
    assert result.settings["precision_hint"] in ("f32", "float32")
    assert len(int8_stats.latencies_ms) == 3 and int8_stats.ratio is not None
