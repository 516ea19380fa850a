"""Entropy calibration against NVIDIA Model Optimizer's own, where it is installed: the
thresholds users moving from `pytorch_quantization` expect. Its sweep is a Python loop
over every bin of every candidate, so the histograms here are small (160 to 320 bins)."""

import numpy as np
import pytest
import torch

pytest.importorskip("modelopt.torch.quantization")
from modelopt.torch.quantization.calib.histogram import (  # noqa: E402
    HistogramCalibrator as ReferenceCalibrator,
)
from modelopt.torch.quantization.calib.histogram import _compute_amax_entropy  # noqa: E402

from yoloq.quant import HistogramCalibrator  # noqa: E402
from yoloq.quant.amax import entropy_amax  # noqa: E402

DISTRIBUTIONS = ("gaussian", "laplace", "relu", "silu", "outliers")


def sample(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if name == "gaussian":
        x = rng.normal(size=n)
    elif name == "laplace":
        x = rng.laplace(size=n)
    elif name == "relu":
        x = np.maximum(rng.normal(size=n), 0)
    elif name == "silu":
        z = rng.normal(size=n) * 2
        x = z / (1 + np.exp(-z))
    else:  # a Gaussian with a few large outliers
        x = rng.normal(size=n)
        x[rng.choice(n, 4, replace=False)] = rng.uniform(15, 30, size=4) * [1, -1, 1, -1]
    return x.astype(np.float32)


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_pure_function_equals_model_optimizer(name):
    x = np.abs(sample(name, 50_000, np.random.default_rng(0)))
    hist, edges = np.histogram(x, bins=256, range=(0, float(x.max())))
    expected = float(_compute_amax_entropy(hist.copy(), edges, 8, False))  # it edits hist
    assert entropy_amax(hist, edges, 8) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_calibrator_equals_model_optimizer_on_a_growing_stream(name):
    # Later batches are wider than the first, so both histograms grow (to about 2x).
    rng = np.random.default_rng(1)
    batches = [torch.from_numpy(sample(name, 20_000, rng) * (1 + k / 4)) for k in range(5)]
    ours = HistogramCalibrator(num_bits=8, num_bins=160)
    reference = ReferenceCalibrator(num_bits=8, unsigned=False, num_bins=160)
    for batch in batches:
        ours.collect(batch)
        reference.collect(batch)
    assert len(ours.histogram()[0]) == reference._calib_hist.numel()
    expected = float(reference.compute_amax("entropy"))
    assert ours.compute_amax("entropy").item() == pytest.approx(expected, rel=1e-5)
