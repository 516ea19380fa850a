"""Quantization-aware training (QAT): fine-tune a calibrated INT8 model against its float self.

config (QatConfig, lr schedule) -> supervision (teacher, layer-wise MSE) -> train (steps,
epochs) -> run (PTQ source, checkpoints, resume, report); distributed for torchrun.

The student is the PTQ model (fused, quantized, calibrated; PTQ runs first when no
`ptq.pt` is given). The teacher is the same model with every quantizer off, i.e. the
fused float model. The loss is the MSE between their outputs at every
`supervision_stride`-th layer (the detection layer excluded), optionally plus the
detection loss on the labels.

Amax stays frozen: it is a buffer, so the optimizer never sees it, and nothing
recalibrates, so quantizers tied for TensorRT (one scale per fusion group) stay tied.

Each epoch runs `iters` batches whose order and augmentation follow (seed, epoch)
alone, so `resume=True` reaches the weights of an uninterrupted run. Under
`torchrun` the student trains in DistributedDataParallel; rank 0 evaluates, saves
and exports. Example::

    result = run_qat(QatConfig(weights="demo", data="demo", epochs=2, iters=20,
                               out="runs/qat"))
    result.report  # float, PTQ and QAT side by side
"""


from yoloq.qat.config import QatConfig, lr_at, parse_lr_schedule
from yoloq.qat.distributed import EpochSampler
from yoloq.qat.run import QatResult, resume_qat, run_qat, write_qat_report
from yoloq.qat.supervision import (
    make_teacher,
    measure_supervision_loss,
    reached_layers,
    supervised_layers,
    supervision_loss,
)

__all__ = [
    "EpochSampler",
    "QatConfig",
    "QatResult",
    "lr_at",
    "make_teacher",
    "measure_supervision_loss",
    "parse_lr_schedule",
    "reached_layers",
    "resume_qat",
    "run_qat",
    "supervised_layers",
    "supervision_loss",
    "write_qat_report",
]
