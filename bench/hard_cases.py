"""The hard cases: what yoloq brings back where INT8 loses accuracy.

{demo, demo-v5} x {trt, ort 7-bit}, the detection head quantized, `--method auto`, 256
calibration images. For each case, in torch's fake quantization:

- float and PTQ on the report images;
- each PTQ option (bias correction, learned rounding) from the same calibration: its gain
  over PTQ on select (what would turn it on by default) and its drop on report;
- the search: the proxy ranking's first `--candidates` layers, each kept float where the
  paired interval of its select gain excludes 0, to `--target-drop`, at most 3 layers;
- QAT from the PTQ model (distillation from the float model), its best epoch chosen on
  select, and its curve (select mAP per epoch).

Every choice looks at the select images only; every drop is float minus the row on the
report images, with its paired bootstrap 95% interval. Resumable: each finished step is in
the JSON at once (a rerun re-evaluates float and PTQ, whose per-image matches the
intervals need, and skips the rest).

    python bench/hard_cases.py --images 500
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch
from _common import RESULTS, machine, write_json

from yoloq.data.splits import SELECT
from yoloq.evaluate.bootstrap import paired_bootstrap
from yoloq.models.sensitivity import yolo_units
from yoloq.sensitivity import ResultsStore, rank, search_fallback
from yoloq.workflows.config import PtqConfig, QatConfig
from yoloq.workflows.demo_hard_case import qat_best_epoch
from yoloq.workflows.steps import (
    evaluate_model,
    prepare,
    proxy_scores,
    quantize_and_calibrate,
    regroup_for,
    save_checkpoint,
    select_reading,
    significant_gain,
    tune_weights,
)

CASES = {"demo / trt": ("demo", "trt", 8), "demo / ort 7-bit": ("demo", "ort", 7),
         "demo-v5 / trt": ("demo-v5", "trt", 8), "demo-v5 / ort 7-bit": ("demo-v5", "ort", 7)}
OPTIONS = {"bias correction": {"bias_correction": True}, "learned rounding": {"adaround": True}}
NAME = "hard_cases"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--images", type=int, default=500,
                        help="the first N select and N report images")
    parser.add_argument("--calib-images", type=int, default=256)
    parser.add_argument("--target-drop", type=float, default=0.1, help="points, on select")
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--qat-epochs", type=int, default=3)
    parser.add_argument("--qat-iters", type=int, default=80)
    parser.add_argument("--qat-lr", default="0:1e-5")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", default="/tmp/yoloq_hard_cases", help="checkpoints")
    args = parser.parse_args()
    path = RESULTS / f"{NAME}_{args.images}images.json"
    results = _load(path, args)
    for case in args.cases.split(","):
        run_case(case, args, results["cases"].setdefault(case, {}),
                 lambda: write_json(path.name, results))
        write_json(path.name, results)
    (RESULTS / f"{NAME}_{args.images}images.md").write_text(markdown(results))
    print(markdown(results))
    print(f"wrote {path}")


STEPS = ("ptq", *OPTIONS, "search", "qat")


def markdown(results: dict) -> str:
    """One row per case: float, then each step's drop on report with its interval."""
    header = ("| case | float | " + " | ".join(STEPS) + " |\n"
              "|---|---:|" + "---:|" * len(STEPS) + "\n")
    lines = []
    for case, record in results["cases"].items():
        if "float" not in record:
            continue
        cells = [_drop_text(record[step]) if step in record else "-" for step in STEPS]
        lines.append(f"| {case} | {100 * record['float']:.2f} | " + " | ".join(cells) + " |")
    images = results["settings"]["images"]
    note = (f"\nDrop in mAP@.5:.95 points (float minus the row, torch fake quantization) on "
            f"the first {images} report images, with the paired bootstrap 95% interval; "
            f"every choice on the first {images} select images.\n")
    return header + "\n".join(lines) + "\n" + note


def _drop_text(step: dict) -> str:
    low, high = (100 * v for v in step["drop_interval"])
    kept = f" ({', '.join(step['kept_float']) or 'none'} float)" if "kept_float" in step else ""
    return f"{100 * step['drop']:.2f} [{low:.2f}, {high:.2f}]{kept}"


def _load(path: Path, args) -> dict:
    settings = {k: v for k, v in vars(args).items() if k not in ("cases", "workers", "work")}
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("settings") == settings:
            return saved
    return {"benchmark": NAME, "settings": settings, "machine": machine(), "cases": {}}


def run_case(case: str, args, record: dict, save) -> None:
    """Fill `record` (the case's entry of the results) step by step, saving after each."""
    weights, profile, bits = CASES[case]
    config = PtqConfig(weights=weights, data="demo", profile=profile, weight_bits=bits,
                       quantize_head=True, method="auto", calib_images=args.calib_images,
                       val_images=args.images, workers=args.workers, bench_batches=(),
                       out=str(Path(args.work) / case.replace(" / ", "_").replace(" ", "_")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        space = prepare(config)
    Path(config.out).mkdir(parents=True, exist_ok=True)
    float_eval = evaluate_model(space.float_model, space)
    started = time.perf_counter()
    model, _, quant_config, run = quantize_and_calibrate(space, config)
    ptq_seconds = time.perf_counter() - started
    checkpoint = save_checkpoint(model, Path(config.out) / "ptq.pt", config, quant_config,
                                 space, run)
    ptq_eval, ptq_select = evaluate_model(model, space), select_reading(model, space, "bench")
    record.update(float=float_eval.map50_95, method=run.method,
                  ptq=_row(float_eval, ptq_eval, seconds=ptq_seconds))
    save()
    for option, settings in OPTIONS.items():
        if option not in record:
            record[option] = _option(model, space, config, settings, float_eval, ptq_select)
            save()
    if "search" not in record:
        record["search"] = _search(model, space, run.method, float_eval, ptq_select, args,
                                   Path(config.out))
        save()
    if "qat" not in record:
        record["qat"] = _qat(checkpoint, config, space, float_eval, args)
        save()


def _row(float_eval, result, **extra) -> dict:
    paired = paired_bootstrap(float_eval.matches, result.matches, by_area=False).map50_95
    return {"map50_95": result.map50_95, "drop": paired.drop,
            "drop_interval": list(paired.drop_interval), **extra}


def _option(model, space, config, settings, float_eval, ptq_select) -> dict:
    tuned = copy.deepcopy(model)
    started = time.perf_counter()
    tune_weights(tuned, space, replace(config, **settings))
    seconds = time.perf_counter() - started
    chosen, notes = significant_gain(ptq_select, select_reading(tuned, space, "bench"))
    return _row(float_eval, evaluate_model(tuned, space), seconds=round(seconds, 1),
                select_gain=notes["gain"], select_gain_interval=notes["gain_interval"],
                helps_on_select=chosen)


def _search(model, space, method, float_eval, ptq_select, args, out: Path) -> dict:
    started = time.perf_counter()
    units = yolo_units(model, regroup=regroup_for(model, space, method))
    store = ResultsStore(out / "proxy.json", {"case": str(out)})
    scores = proxy_scores(model, space.calib_loader, units, store)
    proxy_seconds = time.perf_counter() - started
    float_select = evaluate_model(space.float_model, space, split=SELECT).map50_95
    candidates = [name for name, _ in rank(scores)][: args.candidates]
    search = search_fallback(units, candidates,
                             lambda: select_reading(model, space, "bench"), float_select,
                             args.target_drop / 100, 3, judge=significant_gain)
    mixed = evaluate_model(model, space)
    units.enable(search.fallback)
    return _row(float_eval, mixed, kept_float=search.fallback, steps=search.history,
                select_float=float_select, select_start=search.start_map,
                select_final=search.final_map, proxy_seconds=round(proxy_seconds, 1),
                seconds=round(time.perf_counter() - started, 1))


def _qat(checkpoint: Path, config: PtqConfig, space, float_eval, args) -> dict:
    qat_config = QatConfig(weights=config.weights, data=config.data, out=config.out,
                           ptq=str(checkpoint), epochs=args.qat_epochs, iters=args.qat_iters,
                           lr_schedule=args.qat_lr, calib_images=config.calib_images,
                           val_images=config.val_images, bench_batches=(),
                           workers=config.workers)
    curve: list[float] = []
    started = time.perf_counter()
    student, best_epoch, train_seconds = qat_best_epoch(checkpoint, qat_config, space, curve)
    seconds = time.perf_counter() - started
    return _row(float_eval, evaluate_model(student, space), best_epoch=best_epoch + 1,
                select_curve=curve, train_seconds=round(train_seconds, 1),
                seconds=round(seconds, 1))


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
