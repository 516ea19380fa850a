"""Cost of calibration relative to the float forward passes it runs.

For each method, times `calibrate` over N batches and the plain float model over
the same batches (interleaved, best of R repeats), and writes the ratio.
Target: histogram calibration at most 1.5x the forward passes. Computing amax is a
fixed cost per quantizer, so the ratio falls as --batches grows.

    python bench/calibration_cost.py --model resnet18 --img 640 --batches 4
    python bench/calibration_cost.py --model demo --batches 32
    python bench/calibration_cost.py --clock cpu --threads 1   # on a busy machine
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from _common import load_benchmark_model, machine, write_json

from yoloq.quant import calibrate, quantize

# wall: elapsed time. cpu: this process's CPU time, which other load on a shared machine
# disturbs far less (with --threads 1, where no thread waits spinning on another).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_float(model, batches, clock) -> float:
    started = clock()
    with torch.no_grad():
        for batch in batches:
            model(batch)
    return clock() - started


def time_calibration(model, batches, method, clock):
    """(seconds of the whole `calibrate` by `clock`, its `CalibrationRun`, whose own
    wall-clock seconds split collecting statistics from computing amax)."""
    started = clock()
    run = calibrate(model, batches, method=method, show_progress=False)
    return clock() - started, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--img", type=int, default=640)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--batches", type=int, default=4,
                        help="calibration batches (default 4); other counts write their own JSON")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default="max,entropy,mse,percentile")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]
    torch.manual_seed(0)
    float_model = load_benchmark_model(args.model)
    quant_model = copy.deepcopy(float_model)
    quantize(quant_model)
    batches = [torch.rand(args.batch, 3, args.img, args.img) for _ in range(args.batches)]
    time_float(float_model, batches[:1], clock)  # warm-up

    rows = []
    for method in args.methods.split(","):
        floats, totals, collects, computes = [], [], [], []
        for _ in range(args.repeats):
            floats.append(time_float(float_model, batches, clock))
            total, run = time_calibration(quant_model, batches, method, clock)
            totals.append(total)
            collects.append(run.collect_seconds)
            computes.append(run.amax_seconds)
        forward = min(floats)
        row = {
            "method": method,
            "quantizers": run.quantizers,
            "float_forward_s": forward,
            "calibrate_s": min(totals),
            "collect_s": min(collects),  # wall clock, as are compute_amax_s
            "compute_amax_s": min(computes),
            "collect_ratio": (min(totals) - min(computes)) / forward,
            "total_ratio": min(totals) / forward,
        }
        rows.append(row)
        print(
            f"{method:>10}: float {forward:.2f} s, calibrate {row['calibrate_s']:.2f} s, "
            f"collect {row['collect_ratio']:.2f}x, amax {row['compute_amax_s']:.2f} s, "
            f"total {row['total_ratio']:.2f}x"
        )
    suffix = "" if args.batches == parser.get_default("batches") else f"_{args.batches}batches"
    path = write_json(
        f"calibration_cost_{args.model}{suffix}.json",
        {
            "benchmark": "calibration_cost",
            "model": args.model,
            "img": args.img,
            "batch": args.batch,
            "batches": args.batches,
            "repeats": args.repeats,
            "clock": args.clock,
            "machine": machine(),
            "rows": rows,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
