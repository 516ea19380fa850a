"""Cost of calibration relative to the float forward passes it runs.

For each method, times `calibrate` over N batches and the plain float model over
the same batches (interleaved, best of R repeats), and writes the ratio.
Target: histogram calibration at most 1.5x the forward passes.

    python bench/calibration_cost.py --model resnet18 --img 640 --batches 4
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from _common import load_benchmark_model, machine, write_json

from yoloq.quant import calibrate, quantize


def time_float(model, batches) -> float:
    started = time.perf_counter()
    with torch.no_grad():
        for batch in batches:
            model(batch)
    return time.perf_counter() - started


def time_calibration(model, batches, method) -> tuple[float, float]:
    """(seconds collecting statistics over the batches, seconds computing amax)."""
    run = calibrate(model, batches, method=method, show_progress=False)
    return run.collect_seconds, run.amax_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--img", type=int, default=640)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default="max,entropy,mse,percentile")
    args = parser.parse_args()

    torch.manual_seed(0)
    float_model = load_benchmark_model(args.model)
    quant_model = copy.deepcopy(float_model)
    quantize(quant_model)
    batches = [torch.rand(args.batch, 3, args.img, args.img) for _ in range(args.batches)]
    time_float(float_model, batches[:1])  # warm-up

    rows = []
    for method in args.methods.split(","):
        floats, collects, computes = [], [], []
        for _ in range(args.repeats):
            floats.append(time_float(float_model, batches))
            collect, compute = time_calibration(quant_model, batches, method)
            collects.append(collect)
            computes.append(compute)
        forward = min(floats)
        row = {
            "method": method,
            "float_forward_s": forward,
            "collect_s": min(collects),
            "compute_amax_s": min(computes),
            "collect_ratio": min(collects) / forward,
            "total_ratio": (min(collects) + min(computes)) / forward,
        }
        rows.append(row)
        print(
            f"{method:>10}: float {forward:.2f} s, collect {row['collect_s']:.2f} s "
            f"({row['collect_ratio']:.2f}x), amax {row['compute_amax_s']:.2f} s, "
            f"total {row['total_ratio']:.2f}x"
        )
    path = write_json(
        f"calibration_cost_{args.model}.json",
        {
            "benchmark": "calibration_cost",
            "model": args.model,
            "img": args.img,
            "batch": args.batch,
            "batches": args.batches,
            "machine": machine(),
            "rows": rows,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
