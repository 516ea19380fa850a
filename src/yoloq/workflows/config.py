"""Run configs: frozen dataclasses saved as `config.yaml` next to every run's outputs, and
read back to rerun or resume it.

`PtqConfig` holds what every workflow needs to quantize a model (data, model,
calibration, placement, export, timing); `QatConfig` adds the training (its lr
schedule, loss, optimizer) and derives its PTQ settings.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

from yoloq.data.config import yaml_error_line
from yoloq.errors import YoloqError
from yoloq.files import write_text_atomic
from yoloq.quant import METHODS, PROFILES
from yoloq.quant.profiles import int8_weights_default

CONFIG_FILE = "config.yaml"
# --method auto: every method calibrated from the same histograms, the one with the best
# mAP on the select images kept.
AUTO = "auto"
CALIBRATION_CHOICES = (*METHODS, AUTO)


class YamlConfig:
    """Mixin for config dataclasses: `from_dict` refuses unknown keys, `load` reads YAML,
    `save` writes `config.yaml` atomically.

    `settings_name` names the config in error messages ("PTQ", "QAT").
    """

    settings_name = "config"

    @classmethod
    def from_dict(cls, data: dict):
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise YoloqError(f"unknown {cls.settings_name} settings: {sorted(unknown)}")
        try:
            return cls(**data)
        except TypeError as error:  # a required setting missing, or a value of a wrong type
            raise YoloqError(f"bad {cls.settings_name} settings: {error}") from None

    @classmethod
    def load(cls, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise YoloqError(f"config not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise YoloqError(f"{path}: not a readable config ({yaml_error_line(error)})") from None
        if not isinstance(data, dict):
            raise YoloqError(f"{path}: not a {cls.settings_name} config (expected a mapping)")
        return cls.from_dict(data)

    def to_dict(self) -> dict:
        """A YAML-ready dict: tuples become lists."""
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in asdict(self).items()}

    def save(self, folder: str | Path) -> Path:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        return write_text_atomic(Path(folder) / CONFIG_FILE, text)


@dataclass(frozen=True)
class PtqConfig(YamlConfig):
    """Everything a PTQ run depends on; saved as `config.yaml` next to its outputs."""

    settings_name = "PTQ"

    weights: str
    data: str
    out: str = "runs/ptq"
    profile: str = "trt"
    method: str = "mse"
    percentile: float = 99.99
    calib_images: int = 256
    batch: int = 8
    img: int | None = None
    ignore: tuple[str, ...] = ()
    weight_bits: int = 8
    val_images: int | None = None  # None: the whole val split
    bench_batches: tuple[int, ...] = (1, 8)
    device: str = "cpu"
    workers: int = 2
    seed: int = 0
    on_bad_data: str = "error"
    opset: int = 13
    rules: bool = True  # trt profile: tie the scales TensorRT needs equal (Concat, MaxPool)
    # Quantize the detection head's convolutions too (Model Optimizer's and NNCF's default);
    # the box decode after them stays float either way.
    quantize_head: bool = False
    # Quantized weights stored as int8 in the ONNX; None: the profile's default
    # (`int8_weights_default`: the ort profile yes, trt not until TensorRT has checked it).
    int8_weights: bool | None = None
    trt: bool = False  # also build, evaluate and time TensorRT engines (FP16 and INT8)
    # After calibration (see yoloq.quant.weight_tuning): learned rounding of the weights
    # (AdaRound), then bias correction. Off by default: neither helped on the select
    # images of the demo models (bench/hard_cases.py).
    adaround: bool = False
    bias_correction: bool = False

    @property
    def stores_int8_weights(self) -> bool:
        if self.int8_weights is None:
            return int8_weights_default(self.profile)
        return self.int8_weights

    def __post_init__(self):
        object.__setattr__(self, "ignore", tuple(self.ignore))
        object.__setattr__(self, "bench_batches", tuple(int(b) for b in self.bench_batches))
        check_method(self.method)
        if self.profile not in PROFILES:
            raise YoloqError(f"unknown profile {self.profile!r}; use one of {PROFILES}")
        if self.profile == "trt" and self.weight_bits != 8:
            raise YoloqError("--weight-bits 7 is for the ort profile; TensorRT needs 8")
        check_trt_profile(self.trt, self.profile)
        if self.calib_images <= 0 or self.batch <= 0:
            raise YoloqError("--calib-images and --batch must be positive")
        for pattern in self.ignore:
            try:
                re.compile(pattern)
            except re.error as error:
                raise YoloqError(f"--ignore {pattern!r} is not a valid regex: {error}") from None


def check_method(method: str) -> None:
    if method not in CALIBRATION_CHOICES:
        raise YoloqError(f"unknown calibration method {method!r}; use one of "
                         f"{', '.join(CALIBRATION_CHOICES)}")


def check_trt_profile(trt: bool, profile: str) -> None:
    if trt and profile != "trt":
        raise YoloqError(f"--trt builds TensorRT engines: use the trt profile, not {profile}")


def read_ignore_file(path: str | Path) -> list[str]:
    """One regex per line; blank lines and lines starting with # are skipped."""
    path = Path(path)
    if not path.is_file():
        raise YoloqError(f"ignore file not found: {path}")
    try:
        text = path.read_text()
    except UnicodeDecodeError as error:
        raise YoloqError(f"{path}: not a text file of ignore regexes ({error.reason} at byte "
                         f"{error.start})") from None
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def check_output_dir(out: Path, exist_ok: bool) -> None:
    """Refuse to write into a file, or into a folder that holds another run."""
    if out.exists() and not out.is_dir():
        raise YoloqError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not exist_ok:
        raise YoloqError(f"--out {out} is not empty; choose another folder or pass --exist-ok")


# --- QAT ---------------------------------------------------------------------------------

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
    profile: str = "trt"  # this and the next five: the PTQ run when no ptq is given
    method: str = "mse"
    calib_images: int = 256
    # None / (): PtqConfig's default when PTQ runs here; with a ptq, the checkpoint's
    # (a value given must then match it: see workflows.qat).
    ignore: tuple[str, ...] = ()
    weight_bits: int | None = None
    rules: bool | None = None
    quantize_head: bool = False
    int8_weights: bool | None = None  # None: the profile's default (see PtqConfig)
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
        object.__setattr__(self, "ignore", tuple(self.ignore))
        check_method(self.method)
        check_trt_profile(self.trt, self.profile)
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
        unset = {"weight_bits": self.weight_bits, "rules": self.rules}
        return PtqConfig(
            **{name: value for name, value in unset.items() if value is not None},
            ignore=self.ignore,
            quantize_head=self.quantize_head,
            int8_weights=self.int8_weights,
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
