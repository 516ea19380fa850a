"""The built-in benchmark: the shipped demo model, and `yoloq demo` on a subset of it."""

import json

import pytest
import torch

from yoloq.data import create_val_loader, load_data_config, load_split
from yoloq.evaluate import evaluate
from yoloq.models.demo import demo_model, demo_record
from yoloq.runtime import get_backend
from yoloq.runtime.openvino import default_float_precision
from yoloq.workflows.demo import DemoSettings, run_demo
from yoloq.workflows.demo_hard_case import HardCase
from yoloq.workflows.ptq import PtqConfig, run_ptq

# mAP of the shipped demo model on the first 64 val images (measured once; pins the
# weights, the generator, the loaders and the evaluator together).
GOLDEN_MAP50_95 = 0.40867248401513334
GOLDEN_MAP50 = 0.5570175080966511


def test_demo_model_ships_with_its_record():
    model = demo_model()
    record = demo_record()
    assert model.nc == 8 and model.img_size == 320 and not model.training
    assert record["val_map50_95"] >= 0.4
    assert {"command", "device", "train_seconds", "val_map50"} <= set(record)


def test_demo_model_golden_map_on_64_val_images(demo_subset):
    data = load_data_config(demo_subset)
    loader = create_val_loader(load_split(data, "val"), 320, 16, 32)
    model = demo_model()
    with torch.inference_mode():
        result = evaluate(lambda x: model(x)[0], loader, progress=False)
    assert result.images == 64
    assert result.map50_95 >= 0.4
    assert result.map50_95 == pytest.approx(GOLDEN_MAP50_95, abs=1e-4)
    assert result.map50 == pytest.approx(GOLDEN_MAP50, abs=1e-4)


def test_ptq_on_demo_subset_stays_within_one_point(demo_subset, tmp_path):
    config = PtqConfig(weights="demo", data=str(demo_subset), out=str(tmp_path / "ptq"),
                       calib_images=32, workers=0, bench_batches=(1,))
    result = run_ptq(config)
    assert abs(result.float_eval.map50_95 - result.ptq_eval.map50_95) <= 0.01
    # On the 51 report images of the subset (13 are held out to select on).
    assert abs(result.ptq_eval.map50_95 - result.onnx_eval.map50_95) <= 0.006
    assert (tmp_path / "ptq" / "report.md").is_file()


def test_demo_runs_every_stage(demo_subset, tmp_path):
    settings = DemoSettings(out=str(tmp_path / "demo"), data=str(demo_subset), val_images=16,
                            calib_images=16, bench_batches=(1,), workers=0,
                            sensitivity_batches=1,
                            hard_case=HardCase(candidates=2, max_layers=1, proxy_batches=1,
                                               qat_epochs=1, qat_iters=2))
    report = run_demo(settings)
    # Where TensorRT and a GPU are present the demo adds engine rows after these.
    rows = [row for row in report.rows if row.backend != "tensorrt"]
    labels = [(row.backend, row.precision, row.profile) for row in rows]
    # Where OpenVINO is installed (the dev extra) the same three files run on it too.
    openvino = get_backend("openvino").unavailable() is None
    float_precision = default_float_precision() if openvino else None  # bf16 on BF16 CPUs
    assert labels == [("torch", "fp32", None), ("torch", "int8", "trt"),
                      ("torch", "int8", "ort"), ("onnxruntime", "fp32", None),
                      ("onnxruntime", "int8", "trt"), ("onnxruntime", "int8", "ort")] + (
        [("openvino", float_precision, None), ("openvino", "int8", "trt"),
         ("openvino", "int8", "ort")]
        if openvino else [])
    # Each OpenVINO row says how many convolutions ran in int8.
    assert all("conv int8" in row.notes for row in rows if row.backend == "openvino")
    # Every INT8 row, OpenVINO's too, has its drop against its own backend's float row.
    assert all(row.drop_interval for row in rows if row.precision == "int8"
               and row.backend != "torch")
    assert all(row.map50_95 is not None for row in report.rows)
    files = {path.name for path in (tmp_path / "demo").iterdir()}
    assert {"ptq_trt.pt", "ptq_ort.pt", "ptq_trt.onnx", "ptq_ort.onnx", "float.onnx",
            "report.json", "report.md", "report.png", "sensitivity.json",
            "sensitivity.png"} <= files
    saved = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert len(saved["rows"]) == len(report.rows)
    hard = json.loads((tmp_path / "demo" / "hard_case" / "report.json").read_text())
    assert [(row["model"], row["precision"]) for row in hard["rows"]] == [
        ("demo-v5", "fp32"), ("demo-v5 ptq", "int8"), ("demo-v5 mixed", "int8"),
        ("demo-v5 qat", "int8")]
    notes = [row["notes"] for row in hard["rows"][1:]]
    assert notes[0] == "PTQ, head quantized" and notes[1].startswith("search, kept float:")
    assert "best epoch 1" in notes[2]
    # Every quantized row is compared with float on the same resampled images.
    assert all(row["drop_interval"][0] <= row["drop_interval"][1] for row in hard["rows"][1:])
    assert len(hard["paired"]) == 3


def test_demo_v5_loads_evaluates_as_recorded_and_exports_with_parity(demo_subset, tmp_path):
    """The shipped YOLOv5 demo model: its fp16 weights give, on the first 64 select images,
    the mAP its fp32 weights gave before shipping, and its ONNX export computes what
    torch does."""
    from yoloq.export import export_detector
    from yoloq.models.demo import ASSETS, DEMO_MODELS, DEMO_V5
    from yoloq.runtime.ort import OrtModel

    model, record = demo_model(DEMO_V5).fuse().eval(), demo_record(DEMO_V5)
    assert record["architecture"] == "yolov5n" and record["select_map50_95"] >= 0.4
    assert (ASSETS / f"{DEMO_MODELS[DEMO_V5]}.pt").stat().st_size <= 4 * 2**20
    loader = create_val_loader(load_split(load_data_config(demo_subset), "val"), 320, 16, 32)
    with torch.inference_mode():
        result = evaluate(lambda x: model(x)[0], loader, progress=False)
    check = record["check"]
    assert result.images == check["images"] == 64
    assert result.map50_95 == pytest.approx(check["map50_95"], abs=0.001)  # 0.1 points
    path = export_detector(model, tmp_path / "demo_v5.onnx", 320)
    images = next(iter(loader)).images[:2]
    with torch.inference_mode():
        expected = model(images)[0]
    actual = OrtModel(path, providers=["CPUExecutionProvider"])(images)
    assert (actual[..., :4] - expected[..., :4]).abs().max() < 0.05  # pixels
    assert (actual[..., 4:] - expected[..., 4:]).abs().max() < 1e-3  # scores
