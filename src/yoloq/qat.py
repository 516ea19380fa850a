"""Quantization-aware training (QAT): fine-tune a calibrated INT8 model against its float self.

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

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader, Sampler

from yoloq.configfile import YamlConfig
from yoloq.console import console, err_console
from yoloq.engines import EngineJob, check_tensorrt_run, engine_rows
from yoloq.errors import YoloqError
from yoloq.ptq import PtqConfig, Workspace

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


# --- distributed: torchrun sets WORLD_SIZE, RANK, LOCAL_RANK -----------------------------


@dataclass(frozen=True)
class Distributed:
    """This process's place in a (possibly one-process) run."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def start_distributed(device: str) -> Distributed:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(device=torch.device(device))
    if device.startswith("cuda"):
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device, backend = f"cuda:{local_rank}", "nccl"
    else:
        backend = "gloo"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend)
    return Distributed(torch.distributed.get_rank(), world, torch.device(device))


def stop_distributed(context: Distributed) -> None:
    if context.world > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


# --- the training data ---------------------------------------------------------------------


class EpochSampler(Sampler[int]):
    """`count` image indices per epoch and process, drawn from (seed, epoch) alone: shuffled
    passes over the dataset, as many as needed; process `rank` takes every `world`-th one."""

    def __init__(self, size: int, count: int, seed: int, rank: int = 0, world: int = 1):
        if size <= 0:
            raise YoloqError("no training images")
        self.size, self.count, self.seed, self.rank, self.world = size, count, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        total = self.count * self.world
        passes = -(-total // self.size)
        order = torch.cat([torch.randperm(self.size, generator=generator) for _ in range(passes)])
        return iter(order[:total][self.rank :: self.world].tolist())

    def __len__(self) -> int:
        return self.count


def create_qat_loader(config: QatConfig, space: Workspace, context: Distributed) -> DataLoader:
    """`config.iters` augmented batches per epoch (call `set_qat_epoch` before each)."""
    from yoloq.data import create_train_loader, load_data_config, load_split
    from yoloq.data.loaders import collate

    data = load_data_config(config.data)
    if "train" not in data.splits:
        raise YoloqError(f"{config.data}: no 'train' split to fine-tune on")
    train_set = load_split(data, "train", on_bad_data=config.on_bad_data)
    # Only its dataset: the letterboxed, augmented images, seeded per (seed, epoch, image).
    dataset = create_train_loader(
        train_set, space.img_size, config.batch, space.stride, seed=config.seed
    ).dataset
    sampler = EpochSampler(
        len(dataset), config.iters * config.batch, config.seed, context.rank, context.world
    )
    return DataLoader(
        dataset,
        batch_size=config.batch,
        sampler=sampler,
        collate_fn=collate,
        num_workers=max(0, config.workers),
        pin_memory=context.device.type == "cuda",
    )


def set_qat_epoch(loader: DataLoader, epoch: int) -> None:
    loader.sampler.set_epoch(epoch)
    loader.dataset.set_epoch(epoch)


# --- the models and the loss ---------------------------------------------------------------


def make_teacher(student: nn.Module) -> nn.Module:
    """The student with every quantizer off: the fused float model, frozen, in eval mode."""
    from yoloq.quant import QuantMode, iter_quantizers

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
    from yoloq.models.loss import DetectionLoss

    student = student.to(context.device)
    teacher = make_teacher(student)
    layers = supervised_layers(student, config.supervision_stride)
    freeze_unreached(student, layers, with_head=config.loss != "supervision")
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
                trainer.teacher(images)
            losses["supervision"] = supervision_loss(student_outputs, teacher_outputs)
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
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

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


# --- the run: state, checkpoints, report ---------------------------------------------------


@dataclass
class QatState:
    """Where a run stands; saved in last.pt so that a resumed run carries on."""

    epoch: int = -1  # the last finished epoch
    best_map: float = -1.0
    best_epoch: int = -1
    train_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    reference: dict = field(default_factory=dict)  # {"float"|"ptq": {"map50_95", "map50"}}


@dataclass
class QatResult:
    out: Path
    state: QatState
    best: Path
    last: Path
    onnx: Path | None = None
    report: object = None  # a yoloq.report.Report


@dataclass(frozen=True)
class _Source:
    """The PTQ checkpoint QAT starts from, and what saving needs of it."""

    path: Path
    payload: dict

    @property
    def profile(self) -> str:
        return self.payload["profile"]

    def quant_config(self):
        from yoloq.quant import QuantConfig

        return QuantConfig.from_dict(self.payload["quant_config"])

    def model(self) -> nn.Module:
        from yoloq.models.quantized import load_quantized

        return load_quantized(self.path, self.payload)


def run_qat(
    config: QatConfig,
    exist_ok: bool = False,
    resume: bool = False,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    reference: dict | None = None,
) -> QatResult | None:
    """The whole QAT workflow; writes config.yaml, ptq.pt (when PTQ runs), best.pt, last.pt,
    the ONNX files and the report into `config.out`.

    resume: continue the run in `config.out` after its last saved epoch.
    on_epoch_end(epoch, record): called on every process after each epoch.
    reference: {"float"|"ptq": {"map50_95", "map50"}} when the caller has measured them
        on the same val images (they are not measured again).
    Returns the result on rank 0, None on the other ranks of a torchrun.
    """
    context = start_distributed(config.device)
    try:
        return _run(config, context, exist_ok, resume, on_epoch_end, reference)
    finally:
        stop_distributed(context)


def resume_qat(folder: str | Path, **overrides) -> QatResult | None:
    """Continue the interrupted run in `folder` (its config.yaml and last.pt)."""
    config = QatConfig.load(Path(folder) / CONFIG_FILE)
    settings = {**config.to_dict(), "out": str(folder)}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return run_qat(QatConfig.from_dict(settings), resume=True)


def _run(
    config: QatConfig,
    context: Distributed,
    exist_ok: bool,
    resume: bool,
    on_epoch_end,
    reference: dict | None,
) -> QatResult | None:
    from yoloq.models.native import read_native
    from yoloq.ptq import check_output_dir, prepare

    out = Path(config.out)
    last = read_native(out / LAST_FILE) if resume else None
    if resume and last is None:
        raise YoloqError(f"--resume {out}: no {LAST_FILE} to continue from")
    if not resume:
        check_output_dir(out, exist_ok)
    if config.trt and context.main:
        check_tensorrt_run(config.profile)  # before long work
    context.barrier()  # every process has checked before the first file is written
    space = prepare(config.ptq_config())
    if context.main and not resume:
        out.mkdir(parents=True, exist_ok=True)
        config.save(out)
    source = _ptq_source(config, space, out, context)
    student = source.model()
    if student.nc != space.float_model.nc:
        raise YoloqError(
            f"{source.path} predicts {student.nc} classes; the data has {space.float_model.nc}"
        )
    trainer = build_trainer(student, config, context, space.img_size, last)
    state = QatState(**last["qat"]["state"]) if last else QatState(reference=reference or {})
    if context.main and not state.reference:
        state.reference = _reference_maps(trainer, space)
    loader = create_qat_loader(config, space, context)
    if context.main:
        console.print(
            f"QAT from {source.path.name}: {len(trainer.layers)} supervised layers, "
            f"{config.epochs} epochs x {config.iters} iterations, batch "
            f"{config.batch} x {context.world} process(es) on {context.device}"
        )
    for epoch in range(state.epoch + 1, config.epochs):
        record = _epoch(trainer, loader, epoch, space, source, state, context)
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
    return _finish(trainer, space, source, state, context) if context.main else None


def _ptq_source(config: QatConfig, space: Workspace, out: Path, context: Distributed) -> _Source:
    """The given ptq.pt, or the one PTQ writes into `out` (on rank 0) when none is given."""
    from yoloq.models.native import read_native
    from yoloq.ptq import quantize_and_calibrate, save_checkpoint

    path = Path(config.ptq) if config.ptq else out / PTQ_FILE
    if not config.ptq and context.main and not path.is_file():
        ptq_config = config.ptq_config()
        model, _, quant_config, run = quantize_and_calibrate(space, ptq_config)
        save_checkpoint(model, path, ptq_config, quant_config, space, run)
    context.barrier()
    payload = read_native(path) if path.is_file() else None
    if payload is None:
        raise YoloqError(f"--ptq {path}: not a yoloq quantized checkpoint")
    return _Source(path, payload)


def _reference_maps(trainer: Trainer, space: Workspace) -> dict:
    """mAP of the float model and of the PTQ model (the student before training)."""
    reference = {
        "float": _evaluate(space.float_model, space, trainer.device),
        "ptq": _evaluate(trainer.student, space, trainer.device),
    }
    console.print(
        f"mAP@.5:.95 float {100 * reference['float']['map50_95']:.2f}, PTQ "
        f"{100 * reference['ptq']['map50_95']:.2f}"
    )
    return reference


def _evaluate(model: nn.Module, space: Workspace, device) -> dict[str, float]:
    from yoloq.ptq import evaluate_predictor, torch_predict

    was_training = model.training
    model.eval()
    result = evaluate_predictor(torch_predict(model), space, str(device))
    model.train(was_training)
    return {"map50_95": result.map50_95, "map50": result.map50}


def _epoch(
    trainer: Trainer,
    loader,
    epoch: int,
    space: Workspace,
    source: _Source,
    state: QatState,
    context: Distributed,
) -> dict:
    """Train one epoch; rank 0 evaluates and saves best.pt (when better) and last.pt."""
    started = time.perf_counter()
    record = {"epoch": epoch, **train_epoch(trainer, loader, epoch, show=context.main)}
    state.train_seconds += time.perf_counter() - started
    state.epoch = epoch
    if context.main:
        record.update(_evaluate(trainer.student, space, trainer.device))
        record["seconds"] = round(state.train_seconds, 1)
        state.history.append(record)
        if record["map50_95"] > state.best_map:
            state.best_map, state.best_epoch = record["map50_95"], epoch
            _save(trainer, source, space, BEST_FILE, {"epoch": epoch, "record": record})
        _save(
            trainer,
            source,
            space,
            LAST_FILE,
            {
                "state": asdict(state),
                "optimizer": trainer.optimizer.state_dict(),
                "scaler": trainer.scaler.state_dict(),
            },
        )
        console.print(
            f"epoch {epoch + 1}/{trainer.config.epochs}: loss {record['loss']:.4g}, "
            f"lr {record['lr']:.1e}, mAP@.5:.95 {100 * record['map50_95']:.2f} "
            f"(best {100 * state.best_map:.2f}, epoch {state.best_epoch + 1})"
        )
    context.barrier()
    return record


def _save(trainer: Trainer, source: _Source, space: Workspace, name: str, qat: dict) -> Path:
    """A quantized checkpoint (atomic: a torn file is never left) with QAT fields."""
    from yoloq.models.quantized import save_quantized

    path = Path(trainer.config.out) / name
    save_quantized(
        trainer.student,
        path,
        source.profile,
        source.quant_config(),
        space.img_size,
        qat={**qat, "config": trainer.config.to_dict(), "source": str(source.path)},
    )
    console.print(f"rank {_rank()}: saved {name}", style="dim")
    return path


def _rank() -> int:
    initialized = torch.distributed.is_available() and torch.distributed.is_initialized()
    return torch.distributed.get_rank() if initialized else 0


def _finish(
    trainer: Trainer, space: Workspace, source: _Source, state: QatState, context: Distributed
) -> QatResult:
    """Export the best model, evaluate it in ONNX Runtime, time it, write the report."""
    from yoloq.models.quantized import load_quantized
    from yoloq.ptq import bench_models, evaluate_onnx, export_pair

    config, out = trainer.config, Path(trainer.config.out)
    best = load_quantized(out / BEST_FILE).to(context.device)
    export_config = PtqConfig(
        **{**config.ptq_config().to_dict(), "profile": source.profile, "weight_bits": 8}
    )
    onnx_path, float_onnx = export_pair(best, space, export_config, out, f"qat_{source.profile}")
    evals = {path: evaluate_onnx(path, space) for path in (float_onnx, onnx_path)}
    latency = None
    if config.bench_batches:
        latency = bench_models([float_onnx, onnx_path], config.bench_batches, space.img_size)
    engines = []
    if config.trt:
        jobs = [EngineJob("float", space.float_model, float_onnx, "fp16", None),
                EngineJob(onnx_path.stem, best, onnx_path, "int8", source.profile)]
        engines = engine_rows(check_tensorrt_run(source.profile), jobs, space, out,
                              config.batch, config.bench_batches or (1,), config.opset)
    report = write_qat_report(config, state, source, evals, latency, engines)
    return QatResult(out, state, out / BEST_FILE, out / LAST_FILE, onnx_path, report)


def write_qat_report(
    config: QatConfig, state: QatState, source: _Source, evals: dict, latency,
    tensorrt_rows: list | None = None,
) -> object:
    """report.json / report.md: float, PTQ and QAT in torch; float and QAT in ONNX Runtime;
    with --trt the FP16 and INT8 engines."""
    from yoloq.ptq import latency_for
    from yoloq.report import Report, ReportRow

    profile, reference = source.profile, state.reference
    best = state.history[[h["epoch"] for h in state.history].index(state.best_epoch)]
    qat_note = f"QAT, best epoch {state.best_epoch + 1}/{config.epochs}"
    rows = [
        ReportRow(
            Path(config.weights).name,
            "torch",
            None,
            "fp32",
            reference["float"]["map50_95"],
            reference["float"]["map50"],
            notes="float",
        ),
        ReportRow(
            source.path.name,
            "torch",
            profile,
            "int8",
            reference["ptq"]["map50_95"],
            reference["ptq"]["map50"],
            notes="PTQ",
        ),
        ReportRow(
            BEST_FILE, "torch", profile, "int8", best["map50_95"], best["map50"], notes=qat_note
        ),
    ]
    for path, result in evals.items():
        quantized = path.name != "float.onnx"
        rows.append(
            ReportRow(
                path.name,
                "onnxruntime",
                profile if quantized else None,
                "int8" if quantized else "fp32",
                result.map50_95,
                result.map50,
                latency_for(latency, path),
                notes=qat_note if quantized else "",
            )
        )
    report = Report(
        rows=rows + list(tensorrt_rows or []),
        config={
            **config.to_dict(),
            "train_seconds": round(state.train_seconds, 1),
            "history": state.history,
        },
    )
    report.save(config.out)
    return report
