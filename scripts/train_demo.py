"""Train a demo model that ships with yoloq on the built-in synthetic benchmark:
`demo` is YOLOv7-tiny (LeakyReLU) at half width, `demo-v5` is YOLOv5n v7.0 (SiLU, C3
with residual adds, SPPF).

A real training loop: augmentation (scale, HSV, flips), AdamW with warm-up and a
cosine schedule, an EMA of the weights, evaluation of the EMA on the val split,
and a checkpoint after every epoch so that `--resume` continues an interrupted
run. Uses the GPU when one is present.

    python scripts/train_demo.py --out runs/train_demo --epochs 30
    python scripts/train_demo.py --out runs/train_demo --resume
    python scripts/train_demo.py --out runs/train_demo --ship   # copy best weights into the package
    python scripts/train_demo.py --model demo-v5 --out runs/train_demo_v5 --epochs 20

The best epoch is chosen on the `select` split (the 500 val images of the
benchmark's first seed); the `report` split is never seen here.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from copy import deepcopy
from pathlib import Path

import torch
import torch.nn as nn

from yoloq.data import AugmentConfig, create_train_loader, create_val_loader, load_data_config
from yoloq.data.dataset import load_split
from yoloq.data.demo import DEMO_DATA
from yoloq.data.synthetic import ensure_dataset
from yoloq.evaluate import evaluate
from yoloq.models import Model
from yoloq.models.loss import DetectionLoss
from yoloq.models.native import atomic_torch_save, save_float_checkpoint
from yoloq.models.registry import architecture_config

SHIPPED = Path(__file__).resolve().parents[1] / "src" / "yoloq" / "assets"


class ModelEma:
    """Exponential moving average of the weights; the decay ramps up over the first updates."""

    def __init__(self, model: nn.Module, decay: float = 0.998, ramp: int = 500):
        self.model = deepcopy(model).eval()
        self.decay, self.ramp, self.updates = decay, ramp, 0
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.ramp))
        source = model.state_dict()
        for key, value in self.model.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(source[key].detach(), alpha=1 - d)


# What each shipped demo model is built from: (architecture, width multiple, asset stem).
DEMO_MODELS = {
    "demo": ("yolov7-tiny", 0.5, "demo_model"),
    "demo-v5": ("yolov5n", 0.25, "demo_v5_model"),
}


def build_demo_model(name: str, nc: int, width: float | None = None) -> Model:
    architecture, default_width, _ = DEMO_MODELS[name]
    cfg = architecture_config(architecture)
    cfg["nc"] = nc
    cfg["width_multiple"] = default_width if width is None else width
    return Model(cfg)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights only, not on norms or biases."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            is_weight = name == "weight" and not isinstance(module, nn.modules.batchnorm._NormBase)
            (decay if is_weight else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def learning_rate(step: int, total: int, peak: float, warmup: int, final: float = 0.02) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress)))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(DEMO_MODELS), default="demo",
                        help="which demo model to train")
    parser.add_argument("--out", default="runs/train_demo")
    parser.add_argument("--data-root", default="runs/synthetic",
                        help="where the synthetic dataset is generated (once)")
    parser.add_argument("--train-images", type=int, default=4000)
    parser.add_argument("--img", type=int, default=320)
    parser.add_argument("--width", type=float, default=None,
                        help="width multiple (default: the demo model's own)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup", type=int, default=300, help="warm-up iterations")
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--ship", action="store_true",
                        help="only copy OUT/best.pt and its record into the package")
    return parser.parse_args(argv)


def evaluate_model(model: nn.Module, val_set, img_size: int, device: str) -> dict:
    loader = create_val_loader(val_set, img_size=img_size, batch_size=32, workers=2)
    model.eval()
    with torch.inference_mode():
        result = evaluate(lambda x: model(x)[0], loader, device=device, progress=False)
    return {"map50_95": result.map50_95, "map50": result.map50}


def train(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    # The benchmark's report images are made too (so that the default cache stays whole),
    # but training never reads them: its best epoch is chosen on `select`.
    data_yaml = ensure_dataset(args.data_root, train_images=args.train_images, val_images=500,
                               report_images=DEMO_DATA["report_images"], size=args.img,
                               seed=args.seed)
    data = load_data_config(data_yaml)
    train_set, val_set = load_split(data, "train"), load_split(data, "select")
    model = build_demo_model(args.model, data.nc, args.width).to(args.device)
    model.names = list(data.names)
    loss_fn = DetectionLoss(model, img_size=args.img).to(args.device)
    optimizer = torch.optim.AdamW(parameter_groups(model, args.weight_decay), lr=args.lr,
                                  betas=(0.937, 0.999))
    ema = ModelEma(model)
    loader = create_train_loader(train_set, img_size=args.img, batch_size=args.batch,
                                 augment=AugmentConfig(), seed=args.seed, workers=args.workers)
    start_epoch, elapsed, history = 0, 0.0, []
    if args.resume and (out / "last.pt").is_file():
        state = torch.load(out / "last.pt", map_location=args.device, weights_only=False)
        model.load_state_dict(state["model"])
        ema.model.load_state_dict(state["ema"])
        ema.updates = state["ema_updates"]
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, elapsed, history = state["epoch"] + 1, state["elapsed"], state["history"]
        print(f"resumed at epoch {start_epoch}")
    total_steps = args.epochs * len(loader)
    best = max((h["map50_95"] for h in history if "map50_95" in h), default=-1.0)
    for epoch in range(start_epoch, args.epochs):
        started = time.perf_counter()
        losses = run_epoch(model, ema, loader, loss_fn, optimizer, epoch, total_steps, args)
        elapsed += time.perf_counter() - started
        record = {"epoch": epoch, "loss": losses, "elapsed_s": round(elapsed, 1)}
        last = epoch == args.epochs - 1
        if last or (epoch + 1) % args.eval_every == 0:
            record.update(evaluate_model(ema.model, val_set, args.img, args.device))
            if record["map50_95"] > best:
                best = record["map50_95"]
                save_float_checkpoint(ema.model, out / "best.pt", args.img,
                                      record=training_record(args, record, elapsed))
        history.append(record)
        print(json.dumps(record), flush=True)
        atomic_torch_save({"model": model.state_dict(), "ema": ema.model.state_dict(),
                           "ema_updates": ema.updates, "optimizer": optimizer.state_dict(),
                           "epoch": epoch, "elapsed": elapsed, "history": history},
                          out / "last.pt")
    (out / "history.json").write_text(json.dumps(history, indent=1))


def run_epoch(model, ema, loader, loss_fn, optimizer, epoch, total_steps, args) -> list[float]:
    model.train()
    loader.dataset.set_epoch(epoch)
    sums, count = torch.zeros(3), 0
    for i, batch in enumerate(loader):
        step = epoch * len(loader) + i
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, total_steps, args.lr, args.warmup)
        images = batch.images.to(args.device, non_blocking=True)
        loss, parts = loss_fn(model(images), batch.targets.to(args.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        ema.update(model)
        sums += parts.cpu()
        count += 1
        if i % 50 == 0:
            print(f"epoch {epoch} iter {i}/{len(loader)} loss {loss.item():.3f} "
                  f"box/obj/cls {[round(v, 4) for v in parts.tolist()]} "
                  f"lr {optimizer.param_groups[0]['lr']:.2e}", flush=True)
    return [round(v, 5) for v in (sums / max(1, count)).tolist()]


def training_record(args, record: dict, elapsed: float) -> dict:
    return {"command": "python scripts/train_demo.py " + " ".join(sys.argv[1:]),
            "device": args.device, "epochs_run": record["epoch"] + 1,
            "train_seconds": round(elapsed, 1), "img_size": args.img,
            "architecture": DEMO_MODELS[args.model][0],
            "width": args.width or DEMO_MODELS[args.model][1],
            "train_images": args.train_images, "select_images": 500,
            "select_map50_95": record["map50_95"], "select_map50": record["map50"]}


def ship(args: argparse.Namespace) -> None:
    """Copy OUT/best.pt into the package as the demo model, with its record as JSON."""
    source = Path(args.out) / "best.pt"
    payload = torch.load(source, map_location="cpu", weights_only=True)
    stem = DEMO_MODELS[args.model][2]
    SHIPPED.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, SHIPPED / f"{stem}.pt")
    (SHIPPED / f"{stem}.json").write_text(json.dumps(payload["record"], indent=2) + "\n")
    size = (SHIPPED / f"{stem}.pt").stat().st_size / 2**20
    print(f"shipped {SHIPPED / (stem + '.pt')} ({size:.1f} MiB): {payload['record']}")


if __name__ == "__main__":
    arguments = parse_args()
    ship(arguments) if arguments.ship else train(arguments)
