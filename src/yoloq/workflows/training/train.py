"""One training step and epoch of QAT: optimizer, AMP, and a progress bar of loss and lr."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn as nn
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch.utils.data import DataLoader

from yoloq.console import err_console
from yoloq.models.loss import DetectionLoss
from yoloq.models.quantized import trace_input
from yoloq.workflows.config import QatConfig, lr_at
from yoloq.workflows.training.distributed import Distributed, set_qat_epoch
from yoloq.workflows.training.supervision import (
    freeze_unreached,
    freeze_unused,
    head_distillation_loss,
    layer_outputs,
    make_teacher,
    supervised_layers,
    supervision_loss,
)

# --- training ------------------------------------------------------------------------------


@dataclass
class Trainer:
    """The student (saved and evaluated), what trains it, and the frozen teacher."""

    student: nn.Module
    wrapped: nn.Module  # the student, or its DistributedDataParallel wrapper
    teacher: nn.Module
    layers: list[int]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    detection_loss: nn.Module | None
    config: QatConfig
    device: torch.device

    @property
    def amp(self) -> bool:
        return self.device.type == "cuda"  # mixed precision where it pays


def build_trainer(
    student: nn.Module,
    config: QatConfig,
    context: Distributed,
    img_size: int,
    resume_payload: dict | None = None,
) -> Trainer:
    """Teacher, optimizer and loss for `student`; with `resume_payload` (a last.pt), its
    weights and optimizer state."""
    student = student.to(context.device)
    teacher = make_teacher(student)
    layers = supervised_layers(student, config.supervision_stride)
    freeze_unreached(student, layers, with_head=True)  # every loss reaches the head
    freeze_unused(student, trace_input(student))
    params = [p for p in student.parameters() if p.requires_grad]
    lr = lr_at(config.schedule, 0)
    optimizer = (
        torch.optim.Adam(params, lr)
        if config.optimizer == "adam"
        else torch.optim.SGD(params, lr, momentum=0.9)
    )
    scaler = torch.amp.GradScaler(context.device.type, enabled=context.device.type == "cuda")
    if resume_payload is not None:
        student.load_state_dict(resume_payload["state_dict"])
        optimizer.load_state_dict(resume_payload["qat"]["optimizer"])
        scaler.load_state_dict(resume_payload["qat"]["scaler"])
    detection = None
    if config.loss != "supervision":
        detection = DetectionLoss(student, img_size).to(context.device)
    wrapped = student
    if context.world > 1:
        device_ids = [context.device.index] if context.device.type == "cuda" else None
        wrapped = nn.parallel.DistributedDataParallel(student, device_ids=device_ids)
    return Trainer(
        student.train(),
        wrapped,
        teacher,
        layers,
        optimizer,
        scaler,
        detection,
        config,
        context.device,
    )


def train_step(trainer: Trainer, batch) -> dict[str, float]:
    """One optimizer step on a batch; returns its losses."""
    images = batch.images.to(trainer.device, non_blocking=True)
    with torch.autocast(trainer.device.type, dtype=torch.float16, enabled=trainer.amp):
        supervised = trainer.layers if trainer.config.loss != "det" else []
        with layer_outputs(trainer.student, supervised) as student_outputs:
            levels = trainer.wrapped(images)
        losses = {}
        if supervised:
            with torch.no_grad(), layer_outputs(trainer.teacher, supervised) as teacher_outputs:
                _, teacher_levels = trainer.teacher(images)  # eval mode: (decoded, raw levels)
            losses["supervision"] = supervision_loss(student_outputs, teacher_outputs)
            losses["head"] = head_distillation_loss(levels, teacher_levels)
        if trainer.detection_loss is not None:
            levels = [level.float() for level in levels]
            losses["det"] = trainer.detection_loss(levels, batch.targets.to(trainer.device))[0]
        loss = sum(losses.values())
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.scaler.scale(loss).backward()
    trainer.scaler.step(trainer.optimizer)
    trainer.scaler.update()
    return {"loss": loss.item(), **{name: value.item() for name, value in losses.items()}}


def train_epoch(trainer: Trainer, loader: DataLoader, epoch: int, show: bool) -> dict:
    """`config.iters` steps at the epoch's lr; returns the mean losses and the lr."""
    config = trainer.config
    torch.manual_seed(config.seed + epoch)  # anything random in the step follows the epoch
    set_qat_epoch(loader, epoch)
    lr = lr_at(config.schedule, epoch)
    for group in trainer.optimizer.param_groups:
        group["lr"] = lr
    trainer.student.train()
    sums: dict[str, float] = {}
    title = f"QAT epoch {epoch + 1}/{config.epochs}"
    with _loss_bar(title, len(loader), show) as update:
        for steps, batch in enumerate(loader, 1):
            for name, value in train_step(trainer, batch).items():
                sums[name] = sums.get(name, 0.0) + value
            update(f"loss {sums['loss'] / steps:.4g} lr {lr:.1e}")
    return {"lr": lr, **{name: value / len(loader) for name, value in sums.items()}}


@contextlib.contextmanager
def _loss_bar(title: str, total: int, enabled: bool):
    """A progress bar whose description carries the running loss and lr: yields
    `update(text)`, which also advances it."""
    if not enabled:
        yield lambda text: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task(title, total=total)
        yield lambda text: bar.update(task, advance=1, description=f"{title}  {text}")
