"""The accuracy table: what each calibration method loses, where it is hard to lose little.

{max, entropy, mse, percentile 99.99} x {head float, head quantized} x {trt, ort 7-bit}
for each shipped demo model: 32 cells. Each cell calibrates on train images (histograms
collected once per model, head and profile, every method's amax computed from them),
exports ONNX with Q/DQ and evaluates it in ONNX Runtime on the report split, next to the
float model's export on the same images: the drop in mAP@.5:.95 with its paired
bootstrap 95% interval. `--torch` also evaluates torch's fake quantization (slower).

Resumable: every finished cell is in the JSON at once, and a rerun skips it. The
Markdown table goes to bench/results/accuracy.md, for the README.

    python bench/accuracy.py                          # both models, 256 calibration images
    python bench/accuracy.py --models demo-v5 --images 500
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
import warnings
from pathlib import Path

import torch
from _common import RESULTS, machine, write_json

from yoloq.console import progress
from yoloq.evaluate.bootstrap import paired_bootstrap
from yoloq.export import detector_metadata, export_detector
from yoloq.models.quantized import quantize_yolo
from yoloq.quant import METHODS
from yoloq.quant.calibrate import calibrate_each
from yoloq.runtime.ort import OrtModel
from yoloq.workflows.config import PtqConfig
from yoloq.workflows.steps import evaluate_model, evaluate_predictor, export_pair, prepare

PROFILES = {"trt": {"profile": "trt"}, "ort 7-bit": {"profile": "ort", "weight_bits": 7}}
HEADS = {"head float": False, "head quantized": True}
NAME = "accuracy"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo,demo-v5")
    parser.add_argument("--calib-images", type=int, default=256)
    parser.add_argument("--images", type=int, default=None,
                        help="report images (default: all); other counts write their own JSON")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--torch", action="store_true", help="also torch fake-quant mAP")
    parser.add_argument("--heads", default=",".join(HEADS), help="rows: these heads only")
    parser.add_argument("--profiles", default=",".join(PROFILES),
                        help="rows: these profiles only")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    suffix = "" if args.images is None else f"_{args.images}images"
    path = RESULTS / f"{NAME}{suffix}.json"
    results = _load(path, args)
    for model in args.models.split(","):
        for head, quantize_head in HEADS.items():
            for profile, settings in PROFILES.items():
                if head not in args.heads.split(",") or profile not in args.profiles.split(","):
                    continue
                row = f"{model} / {head} / {profile}"
                if all(_key(row, m) in results["cells"] for m in METHODS):
                    continue
                cells = run_row(model, quantize_head, settings, args, results, row)
                results["cells"].update(cells)
                write_json(path.name, results)
    (RESULTS / f"{NAME}{suffix}.md").write_text(markdown(results))
    print(markdown(results))
    print(f"wrote {path}")


def _load(path: Path, args) -> dict:
    settings = {"calib_images": args.calib_images, "images": args.images,
                "resamples": args.resamples, "torch": args.torch}
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("settings") == settings:
            return saved
    return {"benchmark": NAME, "settings": settings, "machine": machine(), "cells": {}}


def _key(row: str, method: str) -> str:
    return f"{row} / {method}"


def run_row(model_name, quantize_head, settings, args, results, row) -> dict:
    """The four methods of one row: one calibration pass, four exports and evaluations."""
    config = PtqConfig(weights=model_name, data="demo", calib_images=args.calib_images,
                       val_images=args.images, workers=args.workers, quantize_head=quantize_head,
                       bench_batches=(), **settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        space = prepare(config)
    folder = Path(tempfile.mkdtemp(prefix="yoloq_accuracy_"))
    float_eval = _float_eval(space, config, folder, results, model_name)
    model = copy.deepcopy(space.float_model)
    quantize_yolo(model, config.profile, config.weight_bits, (), not quantize_head)
    started = time.perf_counter()
    each = calibrate_each(model, space.calib_loader, METHODS, show_progress=False)
    calibration_seconds = time.perf_counter() - started
    cells = {}
    for method in progress(METHODS, row):
        each.apply(method)
        onnx_path, _ = export_pair(model, space, config, folder, f"{method}")
        result = evaluate_predictor(OrtModel(onnx_path), space)
        paired = paired_bootstrap(float_eval.matches, result.matches, args.resamples,
                                  by_area=False)
        cell = {"model": model_name, "head": "quantized" if quantize_head else "float",
                "profile": config.profile, "weight_bits": config.weight_bits, "method": method,
                "images": result.images, "float_map50_95": float_eval.map50_95,
                "map50_95": result.map50_95, "drop": paired.map50_95.drop,
                "drop_interval": list(paired.map50_95.drop_interval),
                "calibration_seconds": round(calibration_seconds, 1)}
        if args.torch:
            torch_eval = evaluate_model(model, space)
            cell["torch_map50_95"] = torch_eval.map50_95
        cells[_key(row, method)] = cell
        print(f"{row} / {method}: drop {100 * cell['drop']:.2f} "
              f"[{100 * cell['drop_interval'][0]:.2f}, {100 * cell['drop_interval'][1]:.2f}]",
              flush=True)
    return cells


_FLOAT_EVALS: dict = {}


def _float_eval(space, config, folder, results, model_name):
    """The float export's evaluation on the report images, once per model (in memory:
    the per-image matches it keeps are what the paired intervals need)."""
    if model_name not in _FLOAT_EVALS:
        metadata = detector_metadata(space.names, space.img_size, space.stride, "fp32", None)
        float_onnx = export_detector(space.float_model, folder / "float.onnx", space.img_size,
                                     config.opset, metadata=metadata)
        _FLOAT_EVALS[model_name] = evaluate_predictor(OrtModel(float_onnx), space)
        results.setdefault("float", {})[model_name] = _FLOAT_EVALS[model_name].map50_95
    return _FLOAT_EVALS[model_name]


def markdown(results: dict) -> str:
    """Drops in points with their intervals; bold where the interval lies above 0.3."""
    cells = results["cells"]
    header = ("| model | head | profile | " + " | ".join(METHODS) + " |\n"
              "|---|---|---|" + "---:|" * len(METHODS) + "\n")
    lines = []
    rows = dict.fromkeys(key.rsplit(" / ", 1)[0] for key in cells)
    for row in rows:
        model, head, profile = row.split(" / ")
        entries = []
        for method in METHODS:
            cell = cells.get(_key(row, method))
            entries.append("-" if cell is None else _drop_text(cell))
        lines.append(f"| {model} | {head} | {profile} | " + " | ".join(entries) + " |")
    images = next(iter(cells.values()))["images"] if cells else "-"
    note = (f"\nDrop in mAP@.5:.95 points (float ONNX minus INT8 ONNX, ONNX Runtime CPU) on "
            f"{images} report images, with the paired bootstrap 95% interval "
            f"({results['settings']['resamples']} resamples); calibration on "
            f"{results['settings']['calib_images']} train images. **Bold**: the interval "
            "lies wholly above 0.3 points.\n")
    return header + "\n".join(lines) + "\n" + note


def _drop_text(cell: dict) -> str:
    low, high = (100 * v for v in cell["drop_interval"])
    text = f"{100 * cell['drop']:.2f} [{low:.2f}, {high:.2f}]"
    return f"**{text}**" if low > 0.3 else text


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
