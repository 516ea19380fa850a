"""The ops a scale passes through, seen the same way in a traced torch module (the groups)
and in its ONNX export (the lint's scale domains): keyword torch.cat, torch.stack, F.pad
by mode and value, the ATen nearest upsample; and a torchvision ResNet-18."""

from __future__ import annotations

import onnx
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from yoloq.export import export_onnx
from yoloq.graph import ScaleGroup, find_scale_groups
from yoloq.graph.lint import QdqGraph
from yoloq.quant import calibrate, quantize

# (op, whether it keeps values): each is read before by `<op>_in` and after by `<op>_out`.
OPS = {
    "cat": True,  # torch.cat(tensors=..., dim=...), keywords only
    "stack": True,
    "zero_pad": True,  # F.pad constant mode, value None: zeros
    "reflect_pad": True,
    "replicate_pad": True,
    "fill_pad": False,  # F.pad(value=0.5): a new value, off the grid in general
    "up": True,  # torch._C._nn.upsample_nearest2d, the ATen op itself
}


class OpsNet(nn.Module):
    """Every op reads its own tensor (`x * k`: joined to nothing else), read before the op
    by one quantized conv and after it by another."""

    def __init__(self):
        super().__init__()
        wide = {"cat", "stack"}  # two inputs of 4 channels each
        for op in OPS:
            setattr(self, f"{op}_in", nn.Conv2d(4, 4, 1))
            setattr(self, f"{op}_out", nn.Conv2d(8 if op in wide else 4, 4, 1))

    def forward(self, x):
        t = {op: x * (k + 2) for k, op in enumerate(OPS)}
        after = {
            "cat": torch.cat(tensors=[t["cat"], t["cat"] + 1], dim=1),
            "stack": torch.stack([t["stack"], t["stack"] + 1], 1).flatten(1, 2),
            "zero_pad": F.pad(t["zero_pad"], (1, 1, 1, 1)),
            "reflect_pad": F.pad(t["reflect_pad"], (1, 1, 1, 1), mode="reflect"),
            "replicate_pad": F.pad(t["replicate_pad"], (1, 1, 1, 1), "replicate"),
            "fill_pad": F.pad(t["fill_pad"], (1, 1, 1, 1), value=0.5),
            "up": torch._C._nn.upsample_nearest2d(t["up"], None, [2.0, 2.0]),
        }
        convs = [(getattr(self, f"{op}_in"), t[op]) for op in OPS]
        convs += [(getattr(self, f"{op}_out"), after[op]) for op in OPS]
        return sum(conv(y).mean() for conv, y in convs)  # every conv used: none pruned


def pair(op: str) -> tuple[str, str]:
    return f"{op}_in.input_quantizer", f"{op}_out.input_quantizer"


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model, _ = quantize(OpsNet().eval())
    calibrate(model, [torch.rand(1, 4, 8, 8)], method="max", show_progress=False)
    return model


def test_groups_pass_through_keyword_cat_stack_zero_and_copy_pads_and_aten_upsample(net):
    groups = find_scale_groups(net, torch.rand(1, 4, 8, 8))
    assert groups == [ScaleGroup(pair(op)[0], pair(op)) for op, keeps in OPS.items() if keeps]


@pytest.mark.filterwarnings("ignore:Constant folding")  # F.pad's pads: a reversed Slice
def test_the_onnx_domains_agree_with_the_traced_groups(net, tmp_path):
    """The single table seen from the ONNX side: each pair's two Q nodes are in one scale
    domain exactly where the traced groups tie them."""
    path = export_onnx(net, tmp_path / "ops.onnx", torch.rand(1, 4, 8, 8))
    proto = onnx.load(str(path))
    graph = QdqGraph(proto.graph)
    domain = {
        node.name.split("/")[1]: graph.domain_of(node.input[0])
        for node in proto.graph.node
        if node.op_type == "QuantizeLinear" and "input_quantizer" in node.name
    }
    pads = [n for n in proto.graph.node if n.op_type == "Pad"]
    assert len(pads) == 4 and any(n.op_type == "Resize" for n in proto.graph.node)
    shared = {op: domain[f"{op}_in"] == domain[f"{op}_out"] for op in OPS}
    assert shared == OPS


def test_nearest_exact_interpolation_copies_values_too():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)

        def forward(self, x):
            y = x * 2
            return self.a(y), self.b(F.interpolate(y, scale_factor=2.0, mode="nearest-exact"))

    model, _ = quantize(Net().eval())
    groups = find_scale_groups(model, torch.rand(1, 4, 4, 4))
    assert groups == [ScaleGroup("a.input_quantizer", ("a.input_quantizer", "b.input_quantizer"))]


def test_resnet18_groups_its_maxpool_and_the_downsample_readers():
    """torchvision's ResNet-18 as any module: the stem max-pool with the first conv after
    it, and each downsampling block's conv1 with its 1x1 shortcut conv (both read the block
    input); the residual `out += identity` is float and ends every other connection."""
    import torchvision

    model, _ = quantize(torchvision.models.resnet18(weights=None).eval())
    groups = find_scale_groups(model, torch.zeros(1, 3, 64, 64))
    expected = [ScaleGroup("maxpool.input_quantizer",
                           ("maxpool.input_quantizer", "layer1.0.conv1.input_quantizer"))]
    for i in (2, 3, 4):
        conv1, shortcut = f"layer{i}.0.conv1", f"layer{i}.0.downsample.0"
        members = (f"{conv1}.input_quantizer", f"{shortcut}.input_quantizer")
        expected.append(ScaleGroup(members[0], members))
    assert groups == expected
