"""QAT settings: the lr schedule and QatConfig (saved as config.yaml)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from yoloq.configfile import YamlConfig
from yoloq.errors import YoloqError
from yoloq.ptq import PtqConfig

CONFIG_FILE = "config.yaml"
PTQ_FILE, BEST_FILE, LAST_FILE = "ptq.pt", "best.pt", "last.pt"
LOSSES = ("supervision", "det", "both")
OPTIMIZERS = ("adam", "sgd")


def parse_lr_schedule(text: str) -> tuple[tuple[int, float], ...]:
    """The lr from each epoch on: "0:1e-6,3:1e-5" -> ((0, 1e-6), (3, 1e-5)).

    Epochs start at 0 and increase; every lr is positive.
    """
    steps = []
    for item in text.replace(" ", "").split(","):
        epoch, sep, lr = item.partition(":")
        try:
            steps.append((int(epoch), float(lr)))
        except ValueError:
            raise YoloqError(f"--lr-schedule {text!r}: {item!r} is not epoch:lr") from None
        if not sep or steps[-1][1] <= 0:
            raise YoloqError(f"--lr-schedule {text!r}: {item!r} is not epoch:lr (lr > 0)")
    epochs = [epoch for epoch, _ in steps]
    if epochs[0] != 0 or epochs != sorted(set(epochs)):
        raise YoloqError(f"--lr-schedule {text!r}: epochs must start at 0 and increase")
    return tuple(steps)


def lr_at(schedule: tuple[tuple[int, float], ...], epoch: int) -> float:
    """The lr of the last schedule step at or before `epoch`."""
    return [lr for start, lr in schedule if start <= epoch][-1]


@dataclass(frozen=True)
class QatConfig(YamlConfig):
    """Everything a QAT run depends on; saved as `config.yaml` next to its outputs."""

    settings_name = "QAT"

    weights: str
    data: str
    out: str = "runs/qat"
    ptq: str | None = None  # the ptq.pt to start from; None: run PTQ first (ptq.pt in out)
    epochs: int = 10
    iters: int = 200  # batches per epoch; the training images are cycled
    lr_schedule: str = "0:1e-6,3:1e-5,8:1e-6"  # epoch:lr, piecewise constant
    # Adam, as NVIDIA's yolov7_qat: the default lrs are Adam-sized (SGD barely moves at 1e-5).
    optimizer: str = "adam"
    supervision_stride: int = 1
    loss: str = "supervision"
    batch: int = 8  # per process
    img: int | None = None
    profile: str = "trt"  # this and the next two: the PTQ run when no ptq is given
    method: str = "mse"
    calib_images: int = 256
    val_images: int | None = None  # None: the whole val split
    bench_batches: tuple[int, ...] = (1, 8)  # () skips timing
    device: str = "cpu"
    workers: int = 2
    seed: int = 0
    on_bad_data: str = "error"
    opset: int = 13
    trt: bool = False  # also build, evaluate and time TensorRT engines (FP16 and INT8)

    def __post_init__(self):
        object.__setattr__(self, "bench_batches", tuple(int(b) for b in self.bench_batches))
        if self.trt and self.profile != "trt":
            raise YoloqError(f"--trt builds TensorRT engines: use the trt profile, not "
                             f"{self.profile}")
        if self.epochs <= 0 or self.iters <= 0 or self.batch <= 0:
            raise YoloqError("--epochs, --iters and --batch must be positive")
        if self.supervision_stride <= 0:
            raise YoloqError("--supervision-stride must be positive")
        if self.loss not in LOSSES:
            raise YoloqError(f"unknown loss {self.loss!r}; use one of {LOSSES}")
        if self.optimizer not in OPTIMIZERS:
            raise YoloqError(f"unknown optimizer {self.optimizer!r}; use one of {OPTIMIZERS}")
        parse_lr_schedule(self.lr_schedule)
        self.ptq_config()  # validates the PTQ settings

    @property
    def schedule(self) -> tuple[tuple[int, float], ...]:
        return parse_lr_schedule(self.lr_schedule)

    def ptq_config(self) -> PtqConfig:
        """The PTQ settings: data, model, loaders, and the PTQ run when no ptq is given."""
        return PtqConfig(
            weights=self.weights,
            data=self.data,
            out=self.out,
            profile=self.profile,
            method=self.method,
            calib_images=self.calib_images,
            batch=self.batch,
            img=self.img,
            val_images=self.val_images,
            bench_batches=self.bench_batches,
            device=self.device,
            workers=self.workers,
            seed=self.seed,
            on_bad_data=self.on_bad_data,
            opset=self.opset,
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "bench_batches": list(self.bench_batches)}

    def save(self, folder: Path) -> Path:
        from yoloq.report import write_text_atomic

        return write_text_atomic(
            Path(folder) / CONFIG_FILE, yaml.safe_dump(self.to_dict(), sort_keys=False)
        )
