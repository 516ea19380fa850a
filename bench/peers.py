"""yoloq against the quantization tools users would otherwise pick, in one run.

The same models, data and machine for every tool. Accuracy and speed on both shipped
demo models, `demo` (YOLOv7-tiny at half width) and `demo-v5` (YOLOv5n at width 0.25,
SiLU), at 320 px: yoloq PTQ (trt and ort profiles), PTQ followed by the mixed-precision
search, a short QAT; ONNX Runtime's `quantize_static` (MinMax, Entropy, Percentile),
NVIDIA Model Optimizer's `mtq.quantize` (INT8_DEFAULT_CFG) and Intel NNCF's
`nncf.quantize`. Every tool runs twice, like for like: with the detection head's
convolutions quantized (the peers' defaults) and with them float (yoloq's default),
each written ONNX checked for it; every tool leaves the box decode float.

Every tool calibrates on the same training images. Every choice (the search's layers,
QAT's best epoch) is made on the select split; every mAP is measured on the report
split (2,000 images), by yoloq's evaluator on each INT8 ONNX in ONNX Runtime through
one loader (letterbox, conf 0.001, IoU 0.65). Every drop below the float ONNX carries
a paired bootstrap 95% interval over the report images, and so does each peer's drop
minus yoloq's of the same head. Latency: ONNX Runtime on the CPU, interleaved with the
float ONNX. Speed alone, on full-width yolov7-tiny and yolov7 at 640 px (random
weights and BatchNorm statistics: see `random_detector`).

"Tool time" is the wall time from the float model (torch, or the float ONNX for the
ONNX tools) to the INT8 ONNX, including whatever the tool evaluates on the way (the
search and QAT measure mAP in torch; their time includes the PTQ they start from, and
QAT's its own report of the float, PTQ and QAT models).

The peers are the `bench` extra (`pip install -e .[bench]`); a tool that is missing or
fails gets a row with its error. Results go to bench/results/peers.json after every
row (`--resume` skips the rows it has) and to bench/results/peers.md.

    python bench/peers.py            # the full run (most of its time: evaluations)
    python bench/peers.py --resume   # carry on after an interruption
    python bench/peers.py --quick    # a smoke run (few images and iterations), peers_quick.*
"""

from __future__ import annotations

import argparse
import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn
from _common import RESULTS, calibration_images, random_detector
from _peers_report import markdown
from _peers_scores import Scorer
from _peers_store import Store, run_row, time_section
from _peers_tools import (
    check_head,
    decode_nodes,
    head_convs,
    head_module,
    modelopt_export,
    nncf_quantize,
    ort_quantize_static,
)
from _peers_yoloq import (
    Section,
    export,
    head_key,
    ptq_key,
    yoloq_ptq,
    yoloq_qat,
    yoloq_search,
)

from yoloq.export import detector_metadata, export_detector
from yoloq.models.quantized import quantize_yolo
from yoloq.quant import calibrate
from yoloq.workflows.config import PtqConfig
from yoloq.workflows.steps import prepare

DATA = "demo"
MODELS = {
    "demo": "YOLOv7-tiny at half width, LeakyReLU",
    "demo-v5": "YOLOv5n at width 0.25, SiLU",
}
ORT_OPTIONS = "per-channel, uint8 activations, reduce_range"


@dataclass(frozen=True)
class Settings:
    models: tuple[str, ...] = tuple(MODELS)
    val_images: int | None = None  # None: the whole report split (2,000); caps select too
    calib_images: int = 256  # every tool; ONNX Runtime's histograms hold all activations
    resamples: int = 1000  # of the paired bootstrap intervals
    batch: int = 8  # of calibration and evaluation
    ort_methods: tuple[str, ...] = ("MinMax", "Entropy", "Percentile")
    # The search and QAT rows (torch evaluations on the select split: slow): their models,
    # heads (False: float) and the search's profiles.
    tuned_models: tuple[str, ...] = tuple(MODELS)
    tuned_heads: tuple[bool, ...] = (False,)
    search_profiles: tuple[str, ...] = ("trt", "ort")
    proxy_batches: int = 2  # as `yoloq demo`'s proxy ranking
    target_drop: float = 0.1  # points of mAP@.5:.95
    search_candidates: int = 3  # the most sensitive layers the search may try
    max_fallback: int = 3
    qat_epochs: int = 1  # each epoch ends with an evaluation in torch
    qat_iters: int = 40
    batches: tuple[int, ...] = (1, 8)
    warmup: int = 5
    iters: int = 100  # a few ms per run at batch 1: many runs
    speed_models: tuple[str, ...] = ("yolov7-tiny", "yolov7")
    speed_img: int = 640
    speed_calib_images: int = 8
    speed_warmup: int = 1
    speed_iters: int = 5
    rows: str | None = None  # a regex: only the accuracy rows whose key matches (and float)


QUICK = Settings(
    val_images=32,
    calib_images=16,
    resamples=200,
    batch=2,  # the proxy ranking runs on one batch of each unit
    ort_methods=("MinMax",),
    tuned_models=("demo",),
    search_profiles=("trt",),
    proxy_batches=1,
    search_candidates=2,
    qat_epochs=1,
    qat_iters=3,
    warmup=1,
    iters=3,
    speed_models=("yolov7-tiny",),
    speed_img=320,
    speed_calib_images=2,
    speed_iters=2,
)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


# --- the peers, on any model ---------------------------------------------------------------


@dataclass(frozen=True)
class Peers:
    """What every peer starts from on one model, and where its rows go.

    `row(key, label, build, against)` runs one row; `labelled` (the accuracy sections):
    the keys and labels name the head, each ONNX is checked for it, and each row is
    compared with yoloq's PTQ row of the same head."""

    row: Callable
    float_onnx: Path
    float_model: nn.Module
    batches: list[torch.Tensor]
    img_size: int
    folder: Path
    prefix: str = ""
    metadata: dict | None = None  # class names and the rest, for the evaluator
    labelled: bool = False


def peer_rows(peers: Peers, methods, quantize_head: bool = True) -> None:
    """ONNX Runtime's quantize_static (each method), Model Optimizer and NNCF on the same
    batches, with the head's convolutions quantized or float; the box decode left float
    by every tool, as each one's documentation advises for post-processing."""
    decode, convs = decode_nodes(peers.float_onnx), head_convs(peers.float_onnx)
    exclude = decode if quantize_head else decode + convs
    float_modules = [] if quantize_head else [head_module(peers.float_model)]
    images = sum(len(x) for x in peers.batches)

    def row(key: str, tool: str, variant: str, write, against: str) -> None:
        suffix = f"_{head_key(quantize_head)}" if peers.labelled else ""

        def build() -> dict:
            path = write(peers.folder / f"{peers.prefix}{key}{suffix}.onnx")
            if peers.labelled:
                check_head(path, convs, quantize_head)
            return {"onnx": path}

        label = {"tool": tool, "variant": variant}
        if peers.labelled:
            label["head"] = "quantized" if quantize_head else "float"
        peers.row(key + suffix, label, build, ptq_key(against, quantize_head))

    for method in methods:
        row(
            f"ort_{method.lower()}",
            "ORT quantize_static",
            f"{method}, {ORT_OPTIONS}",
            lambda path, method=method: ort_quantize_static(
                peers.float_onnx, path, peers.batches, method, exclude
            ),
            "ort",
        )
    row(
        "modelopt",
        "Model Optimizer",
        "mtq.quantize, INT8_DEFAULT_CFG",
        lambda path: modelopt_export(
            peers.float_model, path, peers.batches, peers.img_size, float_modules, peers.metadata
        ),
        "trt",
    )
    row(
        "nncf",
        "NNCF",
        "nncf.quantize, defaults",
        lambda path: nncf_quantize(peers.float_onnx, path, peers.batches, images, exclude),
        "trt",
    )


# --- accuracy and speed: the shipped demo models ------------------------------------------


def accuracy_section(store: Store, name: str, settings: Settings) -> None:
    config = PtqConfig(
        weights=name,
        data=DATA,
        out=str(store.work / name),
        calib_images=settings.calib_images,
        val_images=settings.val_images,
        batch=settings.batch,
    )
    space = prepare(config)
    section = Section(store, name, space, config, settings)
    section.work.mkdir(parents=True, exist_ok=True)
    store.section(name)["about"] = {
        "model": MODELS.get(name, name),
        "classes": len(space.names),
        "img_size": space.img_size,
        "splits": space.splits,
    }
    scorer = Scorer(store, name, space, settings.resamples)

    def row(key: str, label: dict, build, against: str | None = None) -> dict:
        if settings.rows and key != "float" and not re.search(settings.rows, key):
            return {}
        return run_row(store, name, key, label, build, scorer.evaluate_as(key, against))

    float_onnx = section.work / "float.onnx"
    row(
        "float",
        {"tool": "float", "variant": "fp32 ONNX", "head": "float"},
        lambda: {"onnx": export(space.float_model, space, float_onnx, None)},
    )
    metadata = detector_metadata(space.names, space.img_size, space.stride, "int8", None)
    peers = Peers(
        row,
        float_onnx,
        space.float_model,
        [batch[0] for batch in space.calib_loader],  # what every tool calibrates on
        space.img_size,
        section.work,
        metadata=metadata,
        labelled=True,
    )
    for quantize_head in (False, True):
        yoloq_rows(section, row, quantize_head, head_convs(float_onnx))
        peer_rows(peers, settings.ort_methods, quantize_head)
    row(
        "ort_minmax_whole",
        {"tool": "ORT quantize_static", "variant": f"MinMax, {ORT_OPTIONS}, box decode too",
         "head": "quantized"},
        lambda: {
            "onnx": ort_quantize_static(
                float_onnx, section.work / "ort_minmax_whole.onnx", peers.batches, "MinMax"
            )
        },
        ptq_key("ort", True),
    )
    if settings.rows is None:  # a partial run measures accuracy only
        time_section(store, name, space.img_size, settings.batches, settings.warmup,
                     settings.iters)


def yoloq_rows(section: Section, row, quantize_head: bool, convs: list[str]) -> None:
    """yoloq's PTQ in both profiles with the head as asked, then the search and QAT
    (where `tuned_models` and `tuned_heads` name this model and head)."""
    settings, head = section.settings, "quantized" if quantize_head else "float"

    def checked(build) -> dict:
        built = build()
        check_head(built["onnx"], convs, quantize_head)
        return built

    profiles = {"trt": "trt profile, MSE", "ort": "ort profile, MSE, 7-bit weights"}
    for profile, variant in profiles.items():
        row(
            ptq_key(profile, quantize_head),
            {"tool": "yoloq PTQ", "variant": variant, "head": head},
            lambda profile=profile: checked(lambda: yoloq_ptq(section, profile, quantize_head)),
        )
    if section.name not in settings.tuned_models or quantize_head not in settings.tuned_heads:
        return
    for profile in settings.search_profiles:
        row(
            f"yoloq_search_{profile}_{head_key(quantize_head)}",
            {"tool": "yoloq PTQ + search", "head": head,
             "variant": f"{profile} profile, target drop {settings.target_drop}"},
            lambda profile=profile: yoloq_search(section, profile, quantize_head),
        )
    epochs = plural(settings.qat_epochs, "epoch")
    row(
        f"yoloq_qat_trt_{head_key(quantize_head)}",
        {"tool": "yoloq QAT", "head": head,
         "variant": f"trt profile, {epochs} x {settings.qat_iters} iterations"},
        lambda: yoloq_qat(section, quantize_head),
    )


# --- speed alone: full-width models with random weights ------------------------------------


def speed_section(store: Store, name: str, settings: Settings) -> None:
    img, work = settings.speed_img, store.work
    model = random_detector(name)
    batches = calibration_images(settings.speed_calib_images, img)

    def row(key: str, label: dict, build, against: str | None = None) -> dict:
        return run_row(store, name, key, label, build)  # no accuracy: nothing to compare

    def yoloq(profile: str, weight_bits: int) -> dict:
        quantized, *_ = quantize_yolo(copy.deepcopy(model), profile, weight_bits)
        calibrate(quantized, batches, method="max", show_progress=False)
        path = work / f"{name}_yoloq_{profile}.onnx"
        return {"onnx": export_detector(quantized, path, img)}

    float_onnx = work / f"{name}_float.onnx"
    row(
        "float",
        {"tool": "float", "variant": "fp32 ONNX"},
        lambda: {"onnx": export_detector(model, float_onnx, img)},
    )
    row(
        "yoloq_ptq_trt",
        {"tool": "yoloq PTQ", "variant": "trt profile, max"},
        lambda: yoloq("trt", 8),
    )
    row(
        "yoloq_ptq_ort",
        {"tool": "yoloq PTQ", "variant": "ort profile, max, 7-bit weights"},
        lambda: yoloq("ort", 7),
    )
    peer_rows(Peers(row, float_onnx, model, batches, img, work, prefix=f"{name}_"), ("MinMax",))
    time_section(store, name, img, settings.batches, settings.speed_warmup, settings.speed_iters)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="few images and iterations, to check the script end to end",
    )
    parser.add_argument(
        "--resume", action="store_true", help="keep the rows the results file already has"
    )
    parser.add_argument(
        "--skip-speed", action="store_true", help="only the demo models (accuracy and speed)"
    )
    parser.add_argument(
        "--models",
        help=f"comma-separated models of the accuracy sections (default: {','.join(MODELS)})",
    )
    parser.add_argument(
        "--tuned-models",
        help="comma-separated models that get the search and QAT rows (slow: torch "
        f"evaluations); '' for none (default: {','.join(MODELS)})",
    )
    parser.add_argument(
        "--rows",
        help="a regex: only the accuracy rows whose key matches (with float, and the "
        "yoloq row each is compared with, when that matches too); no latency. Results go "
        "to peers_rows.json, e.g. --rows 'yoloq_ptq_ort_head_float|ort_percentile_head_float'",
    )
    args = parser.parse_args()
    settings = QUICK if args.quick else Settings()
    if args.rows:
        settings = replace(settings, rows=args.rows, speed_models=())
    if args.tuned_models is not None:
        tuned = tuple(name for name in args.tuned_models.split(",") if name)
        settings = replace(settings, tuned_models=tuned)
    if args.skip_speed:
        settings = replace(settings, speed_models=())
    if args.models:
        settings = replace(settings, models=tuple(args.models.split(",")))
    name = "peers_quick" if args.quick else "peers_rows" if args.rows else "peers"
    store = Store(RESULTS / f"{name}.json", RESULTS / name, settings, args.resume)
    torch.manual_seed(0)
    for model in settings.models:
        accuracy_section(store, model, settings)
    for model in settings.speed_models:
        speed_section(store, model, settings)
    store.save()
    text = markdown(store.data)
    (RESULTS / f"{name}.md").write_text(text)
    print(text)
    print(
        f"wrote {store.path} and {RESULTS / f'{name}.md'} in "
        f"{store.data['wall_seconds'] / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
