"""Scale groups on a plain torch module written with functional ops (no YOLO layers)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from yoloq.graph import ScaleGroup, find_scale_groups, quantizer_ties, tie_quantizers
from yoloq.quant import QuantConfig, QuantRule, QuantSpec, quantize


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.a, self.b, self.side = (nn.Conv2d(4, 4, 1) for _ in range(3))
        self.head = nn.Conv2d(8, 4, 1)
        self.tap = nn.Conv2d(4, 4, 1)
        self.after = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = F.relu(self.stem(x))  # read by a, b and side: one group
        u, v = self.a(x), self.b(x).relu()
        y = torch.cat([u, v], 1)  # through max-pool, nearest resize and view to head
        y = F.interpolate(F.max_pool2d(y, 2), scale_factor=2.0, mode="nearest")
        head = self.head(y.view(y.shape))
        tap = self.tap(u)  # reads a concat input: joins head
        after = self.after(F.interpolate(y, scale_factor=2.0, mode="bilinear"))  # new values
        return head, tap, after, self.side(x)


def groups_of(config: QuantConfig | None = None):
    model, _ = quantize(Net().eval(), config)
    return model, find_scale_groups(model, torch.zeros(1, 3, 8, 8))


def test_groups_follow_concat_pool_nearest_resize_and_shared_readers_only():
    _, groups = groups_of()
    assert groups == [
        ScaleGroup(
            "a.input_quantizer", ("a.input_quantizer", "b.input_quantizer", "side.input_quantizer")
        ),
        ScaleGroup("head.input_quantizer", ("head.input_quantizer", "tap.input_quantizer")),
    ]  # stem reads the input, after reads a bilinear resize: both alone


def test_a_follower_with_another_spec_stays_untied():
    rule = QuantRule(r"side$", input_spec=QuantSpec(calibrator="max"))
    model, groups = groups_of(QuantConfig(rules=(rule,)))
    with pytest.warns(UserWarning, match="side.input_quantizer has a different spec"):
        ties = tie_quantizers(model, groups)
    assert ties == quantizer_ties(model)
    assert ties == {
        "b.input_quantizer": "a.input_quantizer",
        "tap.input_quantizer": "head.input_quantizer",
    }
    assert model.b.input_quantizer is model.a.input_quantizer
