"""Scale groups found on the shipped architectures, and how ties hold in the ONNX and
through save/load."""

from __future__ import annotations

import re

import onnx
import pytest
import torch

from yoloq.graph import find_scale_groups, quantizer_ties, tied_groups
from yoloq.graph.lint import QdqGraph

# (groups, quantizers in groups), counted by hand from the configs; head convs are float.
#
# yolov7-tiny: every ELAN block `a, b(-2), c, d, Concat[d, c, b, a], e` gives {a, b} (both
# read the block input) and {c, d, e} (c and d read concat inputs, e reads its output);
# an MP gives {MP, the two convs after it, any other reader of its input}:
#   backbone {2,3} {4,5,7} {8m,9,10} {11,12,14} {15m,16,17,50} {18,19,21} {22m,23,24,40}
#   {25,26,28}: 8 groups, 25 quantizers;
#   head {29,30} {31m,32m,33m,35} {38,68,69} {42,43} {44,45,47} {48,60,61} {52,53}
#   {54,55,57} {58,74} {62,63,65} {66,75} {70,71,73}: 12 groups, 32 quantizers.
# yolov5s: C3 with shortcut: {cv1, cv2} and {m.k.cv1, m.k.add} per bottleneck: layers
#   2, 4, 6, 8 (1+2+3+1 bottlenecks) give 11 groups, 22 quantizers; SPPF {9.cv2, 9.m}
#   (one max-pool module called three times); the two upsample paths join concats:
#   {7, 13.cv1, 13.cv2, 23.cv1, 23.cv2} (6 -> concat 12; 10 -> up -> 12 and concat 22)
#   and {5, 17.cv1, 17.cv2, 20.cv1, 20.cv2}: 14 groups, 34 quantizers.
# yolov7: stem 0-3 alone; per ELAN {4,5}-like pairs and {6,8,11}-like triples, per MP
#   {MP, next, -3, other readers}: backbone {4,5} {6,8,11} {12m,13,14} {17,18} {19,21,24}
#   {25m,26,27,66} {30,31} {32,34,37} {38m,39,40,54} {43,44} {45,47,50}: 11 groups, 31;
#   head {51.cv1,51.cv2} {51.m.0-2,51.cv5} {52,94,95} {56,57} {58,59,60,61,63} {64,81,82}
#   {68,69} {70,71,72,73,75} {76m,77,78,102} {83,84,85,86,88} {89m,90,91,103}
#   {96,97,98,99,101}: 12 groups, 44 quantizers.
PINNED = {"yolov7-tiny": (20, 57), "yolov5s": (14, 34), "yolov7": (23, 75)}
ARCHS = list(PINNED)


@pytest.mark.parametrize("arch", ARCHS)
def test_group_counts_match_the_architecture(quantized, arch):
    model, _, _ = quantized(arch)
    groups = tied_groups(model)
    assert (len(groups), sum(len(g.members) for g in groups)) == PINNED[arch]


def test_groups_are_deterministic_with_leader_first_in_module_order():
    from yoloq.models import build_model
    from yoloq.models.quantized import quantize_yolo, trace_input

    model = build_model("yolov7-tiny", nc=3).fuse().eval()
    quantize_yolo(model, rules=False)
    first = find_scale_groups(model, trace_input(model))
    assert first == find_scale_groups(model, trace_input(model))
    order = [path for path, _ in model.named_modules()]
    for group in first:
        assert group.leader == min(group.members, key=order.index)
    assert any(
        g.leader == "model.8.m.input_quantizer" and "model.10.conv.input_quantizer" in g.members
        for g in first
    )


def _quantizer_path(node_name: str) -> str | None:
    """The module path of a Q node's quantizer, from the exporter's scope names:
    '/model/model.2/m/m.0/cv1/conv/input_quantizer_1/QuantizeLinear' ->
    'model.2.m.0.cv1.conv.input_quantizer' (a container's child is scoped 'm/m.0')."""
    match = re.match(r"/(.*?_quantizer)(_\d+)?/QuantizeLinear$", node_name)
    if match is None:
        return None
    parts: list[str] = []
    for part in match.group(1).split("/"):
        if parts and part.startswith(parts[-1] + "."):
            parts.pop()
        parts.append(part)
    return ".".join(parts)


def _activation_qs(proto) -> list:
    return [
        node
        for node in proto.graph.node
        if node.op_type == "QuantizeLinear" and "weight_quantizer" not in node.name
    ]


@pytest.mark.parametrize("arch", ARCHS)
def test_each_group_is_one_scale_domain_with_one_scale_in_the_onnx(quantized, arch):
    """Every group's Q nodes read tensors of one scale domain of the ONNX (joined only
    through Concat, MaxPool, nearest Resize and reshapes, never a Conv), every Q in that
    domain belongs to the group, and all of them carry one scale. (The exporter merges
    identical Q nodes on one tensor, so some members have no node of their own.)"""
    model, _, path = quantized(arch)
    proto = onnx.load(str(path))
    graph = QdqGraph(proto.graph)
    convs = {node.output[0] for node in proto.graph.node if node.op_type == "Conv"}
    qs = _activation_qs(proto)
    for group in tied_groups(model):
        own = [q for q in qs if _quantizer_path(q.name) in group.members]
        roots = {graph.domain_of(q.input[0]) for q in own}
        assert len(own) >= 1 and len(roots) == 1, group
        in_domain = [q for q in qs if graph.domain_of(q.input[0]) in roots]
        assert {_quantizer_path(q.name) for q in in_domain} <= set(group.members)
        assert len({float(graph.scale(q)[0]) for q in in_domain}) == 1, group
        domain = {t for t, root in graph.domain.items() if root in roots}
        assert not domain & convs


@pytest.mark.parametrize("arch", ARCHS)
def test_without_ties_the_same_groups_disagree(quantized, arch):
    model, _, _ = quantized(arch)
    _, _, untied_path = quantized(arch, rules=False)
    proto = onnx.load(str(untied_path))
    graph = QdqGraph(proto.graph)
    qs = _activation_qs(proto)
    spread = [
        len({float(graph.scale(q)[0]) for q in qs if _quantizer_path(q.name) in g.members})
        for g in tied_groups(model)
    ]
    assert max(spread) > 1


def test_ties_survive_save_and_load(quantized, tmp_path):
    from yoloq.models.quantized import load_quantized, save_quantized

    model, config, _ = quantized("yolov5s")
    model.names = ["a", "b", "c"]
    path = save_quantized(model, tmp_path / "ptq.pt", "trt", config, 64)
    loaded = load_quantized(path)
    assert quantizer_ties(loaded) == quantizer_ties(model) != {}
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images)[0], model.eval()(images)[0])


def test_residual_add_quantizes_the_identity_branch_only(quantized):
    model, _, path = quantized("yolov5s")
    proto = onnx.load(str(path))
    graph = QdqGraph(proto.graph)
    adds = [n for n in proto.graph.node if n.op_type == "Add" and "/add/" in n.name]
    assert len(adds) == 7  # the bottlenecks of layers 2, 4, 6, 8
    for add in adds:
        kinds = [graph.op(name) for name in add.input]
        assert kinds.count("DequantizeLinear") == 1
        dq = graph.producer[add.input[kinds.index("DequantizeLinear")]]
        identity = graph.producer[dq.input[0]].input[0]
        cv1 = add.name.replace("/add/Add", "/cv1/conv/input_quantizer/QuantizeLinear")
        assert identity == next(n for n in proto.graph.node if n.name == cv1).input[0]


@pytest.mark.parametrize("profile, rules", [("ort", True), ("trt", False)])
def test_no_tensorrt_ties_for_ort_or_without_rules(profile, rules):
    """Without rules nothing is tied but a MaxPool's output to its input; the ort
    profile ties quantizers that read one tensor, and through MaxPool and nearest
    resampling, never across a Concat (ONNX Runtime's QLinearConcat takes any scales)."""
    from yoloq.models import build_model
    from yoloq.models.quantized import QuantResidualAdd, quantize_yolo

    model = build_model("yolov5n", nc=3).fuse().eval()
    quantize_yolo(model, profile, rules=rules)
    ties = quantizer_ties(model)
    if profile == "trt":
        assert ties == {}
    else:
        assert ties["model.2.cv1.conv.input_quantizer"] == "model.1.act.output_quantizer"
        pools = {ties[f"model.9.m.{site}_quantizer"] for site in ("input", "output")}
        assert pools == {"model.9.cv1.act.output_quantizer"}
        # layer 13 reads the Concat of layers 11 and 6: its two readers share a scale,
        # which no input of the Concat shares.
        assert ties["model.13.cv2.conv.input_quantizer"] == "model.13.cv1.conv.input_quantizer"
        assert "model.13.cv1.conv.input_quantizer" not in ties
    assert not any(isinstance(m, QuantResidualAdd) for m in model.modules())
