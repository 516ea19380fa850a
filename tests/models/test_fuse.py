"""fuse(): Conv+BN folding, RepConv re-parameterisation, IDetect implicit folding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from yoloq.models import build_model
from yoloq.models.common import Conv
from yoloq.models.families.yolov7 import RepConv


@pytest.mark.parametrize(
    ("name", "size"), [("yolov7-tiny", (128, 160)), ("yolov7", (96, 128)), ("yolov5n", (128, 96))]
)
def test_fused_outputs_match_unfused(name, size, randomize_batch_norm, relative_error):
    model = randomize_batch_norm(build_model(name)).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        expected, expected_raw = model(x)
        assert model.fuse() is model
        actual, actual_raw = model(x)
    assert relative_error(actual, expected) < 1e-4
    for a, e in zip(actual_raw, expected_raw):
        assert relative_error(a, e) < 1e-4
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_fuse_leaves_one_convolution_per_block(randomize_batch_norm):
    model = randomize_batch_norm(build_model("yolov7")).eval().fuse()
    names = set(model.state_dict())
    assert "model.0.conv.bias" in names and "model.0.bn.weight" not in names
    assert "model.102.rbr_reparam.weight" in names
    assert not any("rbr_dense" in n or "rbr_1x1" in n for n in names)
    assert all(m.bn is None for m in model.modules() if isinstance(m, Conv))
    assert all(m.rbr_reparam is not None for m in model.modules() if isinstance(m, RepConv))
    assert model.model[-1].fused


def test_repconv_reparameterisation_with_identity_branch(randomize_batch_norm, relative_error):
    block = randomize_batch_norm(RepConv(8, 8, 3, 1, g=2)).eval()
    assert block.rbr_identity is not None
    x = torch.randn(2, 8, 12, 12)
    with torch.no_grad():
        expected = block(x)
        block.fuse()
        actual = block(x)
    assert relative_error(actual, expected) < 1e-5
    assert [name for name, _ in block.named_children()] == ["act", "rbr_reparam"]
