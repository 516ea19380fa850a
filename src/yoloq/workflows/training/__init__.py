"""The QAT engine, shared by the workflows that fine-tune (`yoloq qat`, `yoloq demo --qat`).

supervision (the teacher: the student with every quantizer off, i.e. the fused float
model; the MSE between their outputs at every `supervision_stride`-th layer, the
detection layer excluded) -> train (trainer, one step, one epoch, optionally plus the
detection loss on the labels); distributed (torchrun's process group, and the epoch
sampler and loader every rank agrees on).
"""

from yoloq.workflows.training.distributed import (
    Distributed,
    EpochSampler,
    create_qat_loader,
    set_qat_epoch,
    start_distributed,
    stop_distributed,
)
from yoloq.workflows.training.supervision import (
    make_teacher,
    measure_supervision_loss,
    reached_layers,
    supervised_layers,
    supervision_loss,
)
from yoloq.workflows.training.train import Trainer, build_trainer, train_epoch

__all__ = [
    "Distributed",
    "EpochSampler",
    "Trainer",
    "build_trainer",
    "create_qat_loader",
    "make_teacher",
    "measure_supervision_loss",
    "reached_layers",
    "set_qat_epoch",
    "start_distributed",
    "stop_distributed",
    "supervised_layers",
    "supervision_loss",
    "train_epoch",
]
