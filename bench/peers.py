"""yoloq against the quantization tools users would otherwise pick, in one run.

The same model, data and machine for every tool. Accuracy and speed on the demo model
and the whole demo val split (500 images at 320 px): yoloq PTQ (trt and ort
profiles), PTQ followed by the mixed-precision search, a short QAT; ONNX Runtime's
`quantize_static` (MinMax, Entropy, Percentile), NVIDIA Model Optimizer's
`mtq.quantize` (INT8_DEFAULT_CFG) and Intel NNCF's `nncf.quantize`. Every tool
calibrates on the same training images, and every INT8 ONNX is scored by yoloq's
evaluator through one loader (letterbox, conf 0.001, IoU 0.65) and timed in ONNX
Runtime on the CPU, interleaved with the float ONNX.
Speed alone, on full-width yolov7-tiny and yolov7 at 640 px (random weights and
BatchNorm statistics: see `random_detector`).

"Tool time" is the wall time from the float model (torch, or the float ONNX for the
ONNX tools) to the INT8 ONNX file, including whatever the tool evaluates on the way
(the search and QAT measure mAP; their time includes the PTQ they start from).

The peers are the `bench` extra (`pip install -e .[bench]`); a tool that is missing or
fails gets a row with its error. Results go to bench/results/peers.json after every
row (`--resume` skips the rows it has) and to bench/results/peers.md.

    python bench/peers.py            # the full run (most of its time: torch evaluations)
    python bench/peers.py --resume   # carry on after an interruption
    python bench/peers.py --quick    # a smoke run (few images and iterations), peers_quick.*
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from _common import RESULTS, calibration_images, machine, random_detector
from _peers_report import markdown, print_row
from _peers_tools import (
    decode_nodes,
    head_convs,
    modelopt_export,
    nncf_quantize,
    ort_quantize_static,
)

from yoloq.export import detector_metadata, export_detector
from yoloq.models.quantized import load_quantized, quantize_yolo
from yoloq.models.sensitivity import yolo_units
from yoloq.quant import calibrate
from yoloq.runtime.backends import get_backend
from yoloq.runtime.bench import benchmark_onnx
from yoloq.sensitivity import ResultsStore, rank, search_fallback
from yoloq.workflows.config import PtqConfig, QatConfig
from yoloq.workflows.qat import run_qat
from yoloq.workflows.steps import (
    evaluate_predictor,
    prepare,
    proxy_scores,
    quantize_and_calibrate,
    regroup_for,
    save_checkpoint,
    torch_predict,
)

DEMO = "demo"
QAT_LR = "0:1e-5"  # the demo's short-QAT schedule


@dataclass(frozen=True)
class Settings:
    val_images: int | None = None  # None: the whole val split (500)
    calib_images: int = 128  # every tool; ONNX Runtime's histograms hold all activations
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


QUICK = Settings(
    val_images=48,
    calib_images=16,
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


class Store:
    """The results JSON, rewritten after every row, with the ONNX files in `work`.

    `wall_seconds` adds up every run that wrote it (a resumed run carries on the count);
    `load_average` is the machine's 1-minute load when the first began and at the last
    save: other work on the machine slows every tool alike, but it shows in the times."""

    def __init__(self, path: Path, work: Path, settings: Settings, resume: bool):
        self.path, self.work = path, work
        self.started, self.before = time.perf_counter(), 0.0
        plain = json.loads(json.dumps(asdict(settings)))
        self.data = {
            "benchmark": "peers",
            "settings": plain,
            "machine": machine(),
            "versions": versions(),
            "sections": {},
        }
        saved = json.loads(path.read_text()) if resume and path.is_file() else None
        if saved and saved.get("settings") == plain:
            self.data["sections"] = saved["sections"]
            self.before = saved.get("wall_seconds", 0.0)
            self.data["load_average"] = saved.get("load_average")
        else:
            if saved:
                print(f"{path} was made with other settings: starting over")
            shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True, exist_ok=True)

    def section(self, name: str) -> dict:
        return self.data["sections"].setdefault(name, {"rows": {}, "latency": None})

    def save(self) -> None:
        load = os.getloadavg()[0]
        first = self.data.get("load_average") or {"start": load}
        self.data["load_average"] = {**first, "end": load}
        self.data["wall_seconds"] = round(self.before + time.perf_counter() - self.started, 1)
        RESULTS.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.data, indent=1) + "\n")
        temporary.replace(self.path)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def versions() -> dict[str, str | None]:
    def of(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    names = ("yoloq", "torch", "onnx", "onnxruntime", "nvidia-modelopt", "nncf")
    return {name: of(name) for name in names}


def run_row(store: Store, section: str, key: str, label: dict, build, evaluate=None) -> dict:
    """A row: `build()` writes an ONNX and returns {"onnx": path, ...}; `evaluate(path)`
    scores it. A finished row (its ONNX still there) is kept; a failed one is retried."""
    rows = store.section(section)["rows"]
    row = rows.pop(key, None)  # put back below: the rows keep the order the code runs them
    if row and not row.get("error") and (store.work / row["onnx"]).is_file():
        rows[key] = row
        return row
    started = time.perf_counter()
    try:
        built = build()
        row = {**label, "seconds": round(time.perf_counter() - started, 1), **built}
        row["onnx"] = str(Path(built["onnx"]).relative_to(store.work))
        if evaluate is not None:
            result = evaluate(store.work / row["onnx"])
            row.update(
                map50_95=result.map50_95,
                map50=result.map50,
                eval_seconds=round(result.model_seconds + result.eval_seconds, 1),
            )
    except Exception as error:  # a peer's failure is a result too
        row = {**label, "error": f"{type(error).__name__}: {error}"}
    rows[key] = row
    store.section(section)["latency"] = None  # a new model: time them all again
    store.save()
    print_row(section, key, row)
    return row


def time_section(store: Store, section: str, img: int, batches, warmup: int, iters: int):
    """Every model of the section interleaved with the float one (the first)."""
    data = store.section(section)
    if data["latency"]:
        return
    keys = [key for key, row in data["rows"].items() if not row.get("error")]
    keys.sort(key=lambda key: key != "float")
    paths = [store.work / data["rows"][key]["onnx"] for key in keys]
    result = benchmark_onnx(paths, batch_sizes=batches, warmup=warmup, iters=iters, img_size=img)
    models = {
        key: {
            str(b): {
                "median_ms": round(result.get(path, b).median_ms, 2),
                "p90_ms": round(result.get(path, b).p90_ms, 2),
                "ratio": round(result.get(path, b).ratio, 3),
            }
            for b in batches
        }
        for key, path in zip(keys, paths)
    }
    data["latency"] = {"settings": result.settings, "models": models}
    store.save()


# --- yoloq on the demo model ---------------------------------------------------------------


def yoloq_ptq(space, config, work: Path) -> dict:
    """quantize -> calibrate -> save the checkpoint -> export, as `yoloq ptq` does."""
    model, _, quant_config, run = quantize_and_calibrate(space, config, show=False)
    name = f"yoloq_ptq_{config.profile}"
    save_checkpoint(model, work / f"{name}.pt", config, quant_config, space, run)
    return {"onnx": export(model, space, work / f"{name}.onnx", config.profile)}


def export(model, space, path: Path, profile: str | None) -> Path:
    precision = "int8" if profile else "fp32"
    metadata = detector_metadata(space.names, space.img_size, space.stride, precision, profile)
    return export_detector(model, path, space.img_size, metadata=metadata)


def torch_reference(store: Store, space, key: str, model_of) -> dict:
    """Torch mAP of the float model or a PTQ checkpoint, measured once per results file."""
    saved = store.section(DEMO).setdefault("torch", {})
    if key not in saved:
        started = time.perf_counter()
        result = evaluate_predictor(torch_predict(model_of()), space)
        saved[key] = {
            "map50_95": result.map50_95,
            "map50": result.map50,
            "seconds": round(time.perf_counter() - started, 1),
        }
        store.save()
    return saved[key]


def yoloq_search(store: Store, space, profile: str, settings: Settings) -> dict:
    """PTQ, then `search_fallback` over the proxy ranking's most sensitive layers until the
    torch mAP drop is under the target (`yoloq sensitivity --target-drop`)."""
    work = store.work
    checkpoint = work / f"yoloq_ptq_{profile}.pt"
    reference = {
        "float": torch_reference(store, space, "float", lambda: space.float_model),
        profile: torch_reference(store, space, profile, lambda: load_quantized(checkpoint)),
    }
    started = time.perf_counter()
    model = load_quantized(checkpoint)
    groups = yolo_units(model, regroup=regroup_for(model, space, "mse"))  # as its PTQ
    results = ResultsStore(
        work / f"sensitivity_{profile}.json",
        {"profile": profile, "batches": settings.proxy_batches},
    )
    scores = proxy_scores(model, space.calib_loader, groups, results, settings.proxy_batches)
    candidates = [name for name, _ in rank(scores)][: settings.search_candidates]

    def measure() -> float:
        return evaluate_predictor(torch_predict(model), space).map50_95

    search = search_fallback(
        groups,
        candidates,
        measure,
        reference["float"]["map50_95"],
        settings.target_drop / 100,
        settings.max_fallback,
        start_map=reference[profile]["map50_95"],
    )
    path = export(model, space, work / f"yoloq_search_{profile}.onnx", profile)
    ptq_seconds = store.section(DEMO)["rows"][f"yoloq_ptq_{profile}"]["seconds"]
    spent = sum(ref["seconds"] for ref in reference.values()) + time.perf_counter() - started
    return {
        "onnx": path,
        "fallback": search.fallback,
        "tried": len(search.history),
        "torch_map50_95": search.final_map,
        "seconds": round(ptq_seconds + spent, 1),
    }


def yoloq_qat(store: Store, space, settings: Settings) -> dict:
    """A short `run_qat` from the trt PTQ checkpoint (teacher: the float model)."""
    work, checkpoint = store.work, store.work / "yoloq_ptq_trt.pt"
    reference = {
        "float": torch_reference(store, space, "float", lambda: space.float_model),
        "ptq": torch_reference(store, space, "trt", lambda: load_quantized(checkpoint)),
    }
    out = work / "qat_trt"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    config = QatConfig(
        weights=DEMO,
        data=DEMO,
        out=str(out),
        ptq=str(checkpoint),
        epochs=settings.qat_epochs,
        iters=settings.qat_iters,
        lr_schedule=QAT_LR,
        calib_images=settings.calib_images,
        val_images=settings.val_images,
        bench_batches=(),
        workers=2,
    )
    result = run_qat(config, exist_ok=True, reference=reference)
    ptq_seconds = store.section(DEMO)["rows"]["yoloq_ptq_trt"]["seconds"]
    spent = sum(ref["seconds"] for ref in reference.values()) + time.perf_counter() - started
    return {
        "onnx": result.onnx,
        "train_seconds": round(result.state.train_seconds, 1),
        "best_epoch": result.state.best_epoch + 1,
        "seconds": round(ptq_seconds + spent, 1),
    }


def demo_section(store: Store, settings: Settings) -> None:
    config = PtqConfig(
        weights=DEMO,
        data=DEMO,
        out=str(store.work),
        calib_images=settings.calib_images,
        val_images=settings.val_images,
    )
    space = prepare(config)
    batches = [batch[0] for batch in space.calib_loader]  # what every tool calibrates on
    work = store.work

    def evaluate(path: Path):
        return evaluate_predictor(get_backend("onnxruntime").load(path), space)

    def row(key: str, tool: str, variant: str, build) -> dict:
        return run_row(store, DEMO, key, {"tool": tool, "variant": variant}, build, evaluate)

    row(
        "float",
        "float",
        "fp32 ONNX",
        lambda: {"onnx": export(space.float_model, space, work / "float.onnx", None)},
    )
    float_onnx = work / "float.onnx"
    row("yoloq_ptq_trt", "yoloq PTQ", "trt profile, MSE", lambda: yoloq_ptq(space, config, work))
    row(
        "yoloq_ptq_ort",
        "yoloq PTQ",
        "ort profile, MSE, 7-bit weights",
        lambda: yoloq_ptq(space, replace(config, profile="ort", weight_bits=7), work),
    )
    for profile in ("trt", "ort"):
        row(
            f"yoloq_search_{profile}",
            "yoloq PTQ + search",
            f"{profile} profile, target drop {settings.target_drop}",
            lambda profile=profile: yoloq_search(store, space, profile, settings),
        )
    row(
        "yoloq_qat_trt",
        "yoloq QAT",
        f"trt profile, {plural(settings.qat_epochs, 'epoch')} x {settings.qat_iters} iterations",
        lambda: yoloq_qat(store, space, settings),
    )
    peer_rows(
        store,
        DEMO,
        float_onnx,
        space.float_model,
        batches,
        space.img_size,
        evaluate,
        methods=("MinMax", "Entropy", "Percentile"),
        variants=True,
    )
    time_section(store, DEMO, space.img_size, settings.batches, settings.warmup, settings.iters)


# --- the peers, on any model ---------------------------------------------------------------


def peer_rows(
    store: Store,
    section: str,
    float_onnx: Path,
    float_model,
    batches,
    img_size: int,
    evaluate=None,
    methods=("MinMax",),
    variants=False,
) -> None:
    """ONNX Runtime's quantize_static, Model Optimizer and NNCF, on the same batches; the
    box decode left float by every tool. `variants`: quantize_static also with the box
    decode quantized (its defaults) and with the head's convolutions float (as yoloq)."""
    work, decode = store.work, decode_nodes(float_onnx)
    images = sum(len(x) for x in batches)

    def row(key: str, tool: str, variant: str, build) -> dict:
        return run_row(store, section, key, {"tool": tool, "variant": variant}, build, evaluate)

    options = "per-channel, uint8 activations, reduce_range"
    for method in methods:
        row(
            f"ort_{method.lower()}",
            "ORT quantize_static",
            f"{method}, {options}",
            lambda method=method: {
                "onnx": ort_quantize_static(
                    float_onnx,
                    work / f"{section}_ort_{method.lower()}.onnx",
                    batches,
                    method,
                    decode,
                )
            },
        )
    if variants:
        row(
            "ort_minmax_whole",
            "ORT quantize_static",
            f"MinMax, {options}, box decode too",
            lambda: {
                "onnx": ort_quantize_static(
                    float_onnx, work / f"{section}_ort_minmax_whole.onnx", batches, "MinMax"
                )
            },
        )
        row(
            "ort_minmax_head_float",
            "ORT quantize_static",
            f"MinMax, {options}, head convolutions float too",
            lambda: {
                "onnx": ort_quantize_static(
                    float_onnx,
                    work / f"{section}_ort_minmax_head_float.onnx",
                    batches,
                    "MinMax",
                    decode + head_convs(float_onnx),
                )
            },
        )
    row(
        "modelopt",
        "Model Optimizer",
        "mtq.quantize, INT8_DEFAULT_CFG",
        lambda: {
            "onnx": modelopt_export(
                float_model, work / f"{section}_modelopt.onnx", batches, img_size
            )
        },
    )
    row(
        "nncf",
        "NNCF",
        "nncf.quantize, defaults",
        lambda: {
            "onnx": nncf_quantize(
                float_onnx, work / f"{section}_nncf.onnx", batches, images, decode
            )
        },
    )


# --- speed alone: full-width models with random weights ------------------------------------


def speed_section(store: Store, name: str, settings: Settings) -> None:
    img, work = settings.speed_img, store.work
    model = random_detector(name)
    batches = calibration_images(settings.speed_calib_images, img)

    def yoloq(profile: str, weight_bits: int) -> dict:
        quantized, *_ = quantize_yolo(copy.deepcopy(model), profile, weight_bits)
        calibrate(quantized, batches, method="max", show_progress=False)
        path = work / f"{name}_yoloq_{profile}.onnx"
        return {"onnx": export_detector(quantized, path, img)}

    float_onnx = work / f"{name}_float.onnx"
    run_row(
        store,
        name,
        "float",
        {"tool": "float", "variant": "fp32 ONNX"},
        lambda: {"onnx": export_detector(model, float_onnx, img)},
    )
    run_row(
        store,
        name,
        "yoloq_ptq_trt",
        {"tool": "yoloq PTQ", "variant": "trt profile, max"},
        lambda: yoloq("trt", 8),
    )
    run_row(
        store,
        name,
        "yoloq_ptq_ort",
        {"tool": "yoloq PTQ", "variant": "ort profile, max, 7-bit weights"},
        lambda: yoloq("ort", 7),
    )
    peer_rows(store, name, float_onnx, model, batches, img)
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
        "--skip-speed", action="store_true", help="only the demo model (accuracy and speed)"
    )
    args = parser.parse_args()
    settings = QUICK if args.quick else Settings()
    if args.skip_speed:
        settings = replace(settings, speed_models=())
    name = "peers_quick" if args.quick else "peers"
    store = Store(RESULTS / f"{name}.json", RESULTS / name, settings, args.resume)
    torch.manual_seed(0)
    demo_section(store, settings)
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
