"""Tying quantizers: every member of a scale group uses its leader's TensorQuantizer.

When and why: ties are made BEFORE calibration, by putting the leader's quantizer
object in each follower's place (the module attribute, e.g. `model.7.conv
.input_quantizer`). Then:
- calibration sees the group once and collects the statistics of every tensor the
  group quantizes, so the one amax is fitted to what TensorRT will actually store
  (a Concat output holds exactly the values of all its inputs), not the max of
  amaxes fitted to each part;
- the ONNX has one scale per group by construction (each call site still exports
  its own Q/DQ, named after its own module path);
- QAT trains and freezes one amax, and `disable_quantization` of any member turns
  the group off, never half of it;
- the state_dict keeps a key under every path (all the same value), and a
  checkpoint records the ties (`quantizer_ties`) so that loading re-ties first.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping

import torch.nn as nn

from yoloq.graph.groups import ScaleGroup
from yoloq.quant import TensorQuantizer


def tie_quantizers(model: nn.Module, groups: Iterable[ScaleGroup]) -> dict[str, str]:
    """Make each group's followers use the leader's quantizer, in place.

    A follower whose spec differs from the leader's (a per-layer override) cannot
    share its scale: it stays apart, with a warning. Returns {follower: leader}.
    """
    ties = {}
    aliases = _paths_by_quantizer(model)
    for group in groups:
        leader = model.get_submodule(group.leader)
        for follower in group.followers:
            quantizer = model.get_submodule(follower)
            if quantizer.spec != leader.spec:
                warnings.warn(
                    f"{follower} has a different spec from {group.leader}: not tied; "
                    "the runtime will requantize there (TensorRT: a reformat layer)",
                    stacklevel=2,
                )
                continue
            # Every path of the follower's object: a module may use one quantizer at two
            # sites (a MaxPool's input and output), and both must move to the leader.
            for path in aliases[id(quantizer)]:
                if path != group.leader:
                    ties[path] = group.leader
    apply_ties(model, ties)
    return ties


def _paths_by_quantizer(model: nn.Module) -> dict[int, list[str]]:
    paths: dict[int, list[str]] = {}
    for path, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, TensorQuantizer):
            paths.setdefault(id(module), []).append(path)
    return paths


def apply_ties(model: nn.Module, ties: Mapping[str, str]) -> None:
    """Put the leader's quantizer at each follower path ({follower: leader})."""
    for follower, leader in ties.items():
        quantizer = model.get_submodule(leader)
        if not isinstance(quantizer, TensorQuantizer):
            raise ValueError(f"{leader} is not a TensorQuantizer")
        parent_path, _, name = follower.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        if not isinstance(getattr(parent, name, None), TensorQuantizer):
            raise ValueError(f"{follower} is not a TensorQuantizer")
        setattr(parent, name, quantizer)


def quantizer_ties(model: nn.Module) -> dict[str, str]:
    """{follower path: leader path} of the quantizers that `model` shares; the leader is
    the first path of each shared quantizer in module order."""
    first: dict[int, str] = {}
    ties = {}
    for path, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, TensorQuantizer):
            leader = first.setdefault(id(module), path)
            if leader != path:
                ties[path] = leader
    return ties


def tied_groups(model: nn.Module) -> list[ScaleGroup]:
    """The ties of `model` as groups, leaders in module order."""
    members: dict[str, list[str]] = {}
    for follower, leader in quantizer_ties(model).items():
        members.setdefault(leader, [leader]).append(follower)
    rank = {path: index for index, (path, _) in enumerate(model.named_modules())}
    return [ScaleGroup(leader, tuple(members[leader])) for leader in sorted(members, key=rank.get)]
