"""The teacher, the supervised layers, the layer-wise MSE between student and teacher,
and the distillation of the detection head's outputs."""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from yoloq.errors import YoloqError
from yoloq.models.sensitivity import detection_error
from yoloq.quant import QuantMode, iter_quantizers

# --- the models and the loss ---------------------------------------------------------------


def make_teacher(student: nn.Module) -> nn.Module:
    """The student with every quantizer off: the fused float model, frozen, in eval mode."""
    teacher = copy.deepcopy(student).eval()
    for _, quantizer in iter_quantizers(teacher):
        quantizer.mode = QuantMode.DISABLED
    return teacher.requires_grad_(False)


def supervised_layers(model: nn.Module, stride: int) -> list[int]:
    """Every `stride`-th layer index, from the first; the detection layer (last) excluded."""
    return list(range(0, len(model.model) - 1, stride))


def reached_layers(model: nn.Module, targets: set[int]) -> set[int]:
    """The layers whose outputs flow into any of `targets` (these included)."""
    reached = set(targets)
    for i in reversed(range(len(model.model))):
        if i in reached:
            sources = model.model[i].f
            for j in [sources] if isinstance(sources, int) else sources:
                reached.add(j if j >= 0 else i + j)  # negative: relative to layer i
    return reached - {-1}  # the input image


def freeze_unreached(model: nn.Module, layers: list[int], with_head: bool) -> int:
    """Freeze the parameters that the loss cannot reach; returns how many stay trainable.

    DistributedDataParallel wants a gradient for every trainable parameter at every
    step; with the supervision loss alone, the head (and layers feeding only it) get none.
    """
    targets = set(layers) | ({len(model.model) - 1} if with_head else set())
    reached = reached_layers(model, targets)
    for i, layer in enumerate(model.model):
        layer.requires_grad_(i in reached)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def freeze_unused(model: nn.Module, images: torch.Tensor) -> int:
    """Freeze the trainable parameters that the forward never reads (a fused model keeps
    those it folded away, such as IDetect's implicit layers): DistributedDataParallel
    wants a gradient for each. One training-mode pass on `images` finds them; returns
    how many parameters stay trainable."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    model.train()
    try:
        outputs = model(images)
        total = sum(level.float().sum() for level in outputs)
        grads = torch.autograd.grad(total, trainable, allow_unused=True)
    finally:
        model.train(was_training)
    for parameter, grad in zip(trainable, grads):
        if grad is None:
            parameter.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@contextlib.contextmanager
def layer_outputs(model: nn.Module, layers: list[int]):
    """Within the block, `outputs[i]` is layer i's latest output (tensor outputs only)."""
    outputs: dict[int, torch.Tensor] = {}

    def keeper(i: int):
        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor):
                outputs[i] = output

        return hook

    handles = [model.model[i].register_forward_hook(keeper(i)) for i in layers]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def supervision_loss(student_outputs: dict, teacher_outputs: dict) -> torch.Tensor:
    """Sum over layers of the MSE between student and teacher outputs (in float32)."""
    pairs = [(s, teacher_outputs[i]) for i, s in student_outputs.items() if i in teacher_outputs]
    if not pairs:
        raise YoloqError("no layer output to supervise (all supervised layers return lists)")
    return sum(F.mse_loss(s.float(), t.float()) for s, t in pairs)


# The head term's weight beside the layer MSE (a sum over layers of feature-map MSEs,
# ~1e-2 each on the demo models, where the head's per-anchor error is ~1e-3).
HEAD_WEIGHT = 10.0


def head_distillation_loss(student_levels: list[torch.Tensor],
                           teacher_levels: list[torch.Tensor]) -> torch.Tensor:
    """The detection head's raw outputs against the teacher's, in the sigmoid space the
    decode reads them in (`detection_error`: objectness everywhere, boxes and classes
    where the teacher sees an object), per anchor. The layer MSE never reaches the
    head, and a quantized head is where INT8 loses the most."""
    total = sum(detection_error(s.float(), t.float()) / t[..., 0].numel()
                for s, t in zip(student_levels, teacher_levels, strict=True))
    return total * HEAD_WEIGHT


@torch.no_grad()
def measure_supervision_loss(
    student: nn.Module, teacher: nn.Module, images: torch.Tensor, stride: int = 1
) -> float:
    """The supervision loss of `student` on one batch, in eval mode (for checks and tests)."""
    layers = supervised_layers(student, stride)
    was_training = student.training
    student.eval()
    with layer_outputs(student, layers) as s_out, layer_outputs(teacher, layers) as t_out:
        student(images)
        teacher(images)
    student.train(was_training)
    return float(supervision_loss(s_out, t_out))
