"""Test gating: `slow` tests run with --runslow; `gpu` and `tensorrt` tests skip
where no CUDA device (or no TensorRT) is present."""

from __future__ import annotations

import importlib.util

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def _has_tensorrt() -> bool:
    """A GPU, and a tensorrt module that imports (an installed but broken one skips too)."""
    if not torch.cuda.is_available() or importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        importlib.import_module("tensorrt")
    except Exception:  # a broken install (missing CUDA libraries) raises anything
        return False
    return True


@pytest.fixture(scope="session", autouse=True)
def fewer_resamples():
    """200 bootstrap resamples for the workflows' intervals, not 1000: the tests check
    their plumbing on a few images (tests/evaluate checks the bootstrap itself); each
    interval then takes a fifth of the time."""
    import yoloq.workflows.steps

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(yoloq.workflows.steps, "BOOTSTRAP_RESAMPLES", 200)
        yield


def pytest_collection_modifyitems(config, items):
    skips = {
        "slow": None if config.getoption("--runslow") else "slow: run with --runslow",
        "gpu": None if torch.cuda.is_available() else "gpu: no CUDA device",
        "tensorrt": None if _has_tensorrt() else "tensorrt: TensorRT or a GPU is missing",
    }
    for item in items:
        for marker, reason in skips.items():
            if reason and marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A small synthetic dataset in YOLO format: 24 train and 12 val images of 128 px."""
    from yoloq.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("tiny_data")
    return generate_dataset(root, train_images=24, val_images=12, size=128, seed=1,
                            workers=1, progress=False)


@pytest.fixture(scope="session")
def tiny_yolo(tmp_path_factory):
    """A random-weight YOLOv7-tiny at quarter width with the synthetic set's 8 classes,
    saved as a yoloq float checkpoint for 128 px inputs."""
    from yoloq.data.synthetic import CLASS_NAMES
    from yoloq.models.native import save_float_checkpoint
    from yoloq.models.registry import architecture_config
    from yoloq.models.yolo import Model

    cfg = architecture_config("yolov7-tiny")
    cfg["nc"], cfg["width_multiple"] = len(CLASS_NAMES), 0.25
    torch.manual_seed(0)
    model = Model(cfg)
    model.names = list(CLASS_NAMES)
    return save_float_checkpoint(model, tmp_path_factory.mktemp("tiny_yolo") / "float.pt",
                                 img_size=128)


@pytest.fixture(scope="session")
def demo_subset(tmp_path_factory):
    """The first 64 val (select) and 32 train images of the built-in benchmark: the generator seeds
    each image by its index, so these are the very images of the full set."""
    from yoloq.data.demo import DEMO_DATA
    from yoloq.data.synthetic import generate_dataset

    # No report images: its val split is the first 64 select images of the benchmark.
    settings = {**DEMO_DATA, "train_images": 32, "val_images": 64, "report_images": 0}
    return generate_dataset(tmp_path_factory.mktemp("demo_subset"), workers=1, progress=False,
                            **settings)


@pytest.fixture
def no_tensorrt(monkeypatch):
    """This process as on a machine without the tensorrt package (even where it has one)."""
    from yoloq.runtime.tensorrt import api

    real_import = importlib.import_module

    def import_module(name, *args):
        if name == "tensorrt":
            raise ModuleNotFoundError("No module named 'tensorrt'")
        return real_import(name, *args)

    monkeypatch.setattr(api.importlib, "import_module", import_module)


@pytest.fixture(scope="session")
def conv_onnx(tmp_path_factory):
    """A valid one-Conv ONNX model (no yoloq metadata), built without torch's exporter;
    its weight is big enough that half the file cuts through it."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((16, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["output"])], "conv",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 16, 6, 6])], [weight])
    path = tmp_path_factory.mktemp("conv_onnx") / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path
