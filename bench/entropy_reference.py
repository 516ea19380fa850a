"""yoloq's entropy amax against NVIDIA Model Optimizer's, per distribution.

Two comparisons on 2048-bin histograms, as `pytorch_quantization` users know them:
(a) the pure function, both given the same `(hist, bin_edges)`;
(b) the calibrators, both fed the same stream of batches, later batches wider than
    the first, so that both histograms must grow by their own rule.
Needs the `bench` extra (nvidia-modelopt). Writes bench/results/entropy_reference.json.

    python bench/entropy_reference.py
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import machine, write_json

from yoloq.quant import HistogramCalibrator
from yoloq.quant.amax import entropy_amax

DISTRIBUTIONS = ("gaussian", "laplace", "relu", "silu", "outliers")


def draw(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """n values of a distribution shaped like a conv's input (SiLU, ReLU outputs) or not."""
    if name == "gaussian":
        x = rng.normal(size=n)
    elif name == "laplace":
        x = rng.laplace(size=n)
    elif name == "relu":
        x = np.maximum(rng.normal(size=n), 0)
    elif name == "silu":
        z = rng.normal(size=n) * 2
        x = z / (1 + np.exp(-z))
    else:  # a Gaussian with a handful of values 15-30 sigma out
        x = rng.normal(size=n)
        x[rng.choice(n, 6, replace=False)] = rng.uniform(15, 30, size=6) * np.array([1, -1] * 3)
    return x.astype(np.float32)


def pure_function(name: str, reference, bins: int) -> dict:
    x = np.abs(draw(name, 1_000_000, np.random.default_rng(0)))
    hist, edges = np.histogram(x, bins=bins, range=(0, float(x.max())))
    ours = entropy_amax(hist, edges, 8)
    theirs = float(reference(hist.copy(), edges, 8, False))  # it edits the histogram
    return {"yoloq": ours, "modelopt": theirs, "relative_difference": ours / theirs - 1}


def calibrator_stream(name: str, reference_class, bins: int) -> dict:
    rng = np.random.default_rng(1)
    batches = [torch.from_numpy(draw(name, 200_000, rng) * (1 + k / 4)) for k in range(8)]
    ours = HistogramCalibrator(num_bits=8, num_bins=bins)
    theirs = reference_class(num_bits=8, unsigned=False, num_bins=bins)
    for batch in batches:
        ours.collect(batch)
        theirs.collect(batch)
    a, b = ours.compute_amax("entropy").item(), float(theirs.compute_amax("entropy"))
    return {"yoloq": a, "modelopt": b, "relative_difference": a / b - 1,
            "bins_yoloq": len(ours.histogram()[0]), "bins_modelopt": theirs._calib_hist.numel()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bins", type=int, default=2048)
    args = parser.parse_args()
    try:
        from modelopt.torch.quantization.calib import histogram as reference
    except ImportError as error:
        raise SystemExit(f"needs nvidia-modelopt (pip install -e '.[bench]'): {error}") from None
    rows = []
    for name in DISTRIBUTIONS:
        row = {"distribution": name,
               "pure_function": pure_function(name, reference._compute_amax_entropy, args.bins),
               "calibrator": calibrator_stream(name, reference.HistogramCalibrator, args.bins)}
        rows.append(row)
        a, b = row["pure_function"], row["calibrator"]
        print(f"{name:>9}: (a) yoloq {a['yoloq']:.5g} modelopt {a['modelopt']:.5g} "
              f"({a['relative_difference']:+.2%})  (b) yoloq {b['yoloq']:.5g} "
              f"modelopt {b['modelopt']:.5g} ({b['relative_difference']:+.2%})", flush=True)
    path = write_json("entropy_reference.json", {
        "benchmark": "entropy_reference", "bins": args.bins, "machine": machine(),
        "modelopt": getattr(__import__("modelopt"), "__version__", "?"), "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
