"""A unit switched float by sensitivity is exactly what its ignore line makes of it.

Tied quantizers share one object across layers, so a unit cannot be measured by
disabling its quantizer objects: that would switch whole scale groups off, across other
layers. `Units` puts a disabled quantizer at each of the unit's call sites and gives
what stays of each group the amax that group alone calibrates to, which is what
quantizing with the unit's ignore line and calibrating does.
"""

from __future__ import annotations

import copy

import pytest
import torch

from yoloq.graph import tied_groups
from yoloq.models import build_model
from yoloq.models.demo import demo_model
from yoloq.models.quantized import QuantResidualAdd, quantize_yolo
from yoloq.models.sensitivity import ignore_patterns, yolo_units
from yoloq.quant import calibrate
from yoloq.quant.calibrate import calibrate_groups


def quantized(float_model, images, method, ignore=()):
    model, *_ = quantize_yolo(copy.deepcopy(float_model), ignore=ignore)
    calibrate(model, [images], method=method, show_progress=False)
    return model.eval()


def assert_units_equal_their_ignore_lines(float_model, images, method, names):
    model = quantized(float_model, images, method)

    def regroup(groups):
        return calibrate_groups(model, [images], groups, method, show_progress=False)

    units = yolo_units(model, regroup=regroup)
    units.prepare(names)
    ignored = {n: quantized(float_model, images, method, ignore_patterns([n], "layer"))
               for n in names}
    mattered = []
    with torch.inference_mode():
        full = model(images)[0]
        for name in names:
            with units.off([name]):
                measured = model(images)[0]
            assert torch.equal(measured, ignored[name](images)[0]), name
            mattered.append(not torch.equal(measured, full))
        assert torch.equal(model(images)[0], full)  # every switch was undone
    # A MaxPool re-quantizing values already on its group's grid may change nothing.
    assert sum(mattered) >= len(names) - 1, dict(zip(names, mattered))


def tie_kind(model, name):
    """Which scale groups the layer's call sites belong to, by what ties them."""
    kinds = set()
    for group in tied_groups(model):
        inside = [m for m in group.members if m.startswith(name + ".")]
        if inside:
            kinds.add("maxpool" if any(".m." in m for m in group.members) else "tensor")
    return kinds


@pytest.fixture(scope="module")
def demo_images(demo_subset):
    from yoloq.data import create_calibration_loader, load_data_config, load_split

    data = load_data_config(demo_subset)
    loader = create_calibration_loader(load_split(data, "train"), 4, 160, 4)  # small: fast
    return next(iter(loader))[0]


def test_demo_units_of_every_tie_kind_equal_their_ignore_lines(demo_images):
    float_model = demo_model().fuse().eval()
    # model.3: follower of a shared tensor (one member stays); model.4: leader of one
    # (the leader is gone); model.8: a MaxPool and its readers; model.32: the middle of
    # the SPP MaxPool chain feeding a Concat; model.50: a reader of an upsampled Concat
    # input, tied across the neck.
    names = ["model.3", "model.4", "model.8", "model.32", "model.50"]
    assert all(tie_kind(quantized(float_model, demo_images, "max"), n) for n in names)
    # A histogram method: each group's calibrator must see its sites' tensors in the
    # same order as the tied quantizer of the ignore-line model does.
    assert_units_equal_their_ignore_lines(float_model, demo_images, "percentile", names)


def test_a_residual_add_unit_equals_its_ignore_line():
    torch.manual_seed(0)
    float_model = build_model("yolov5n", nc=3).fuse().eval()
    images = torch.rand(2, 3, 96, 96)
    model = quantized(float_model, images, "max")
    adds = [p for p, m in model.named_modules() if isinstance(m, QuantResidualAdd)]
    layer = ".".join(adds[0].split(".")[:2])  # the C3 layer holding the first residual add
    assert_units_equal_their_ignore_lines(float_model, images, "max", [layer, "model.0"])
