import numpy as np
import pytest
import torch

from yoloq.quant import HistogramCalibrator, MaxCalibrator
from yoloq.quant.amax import entropy_amax, mse_amax, percentile_amax


def test_max_calibrator_per_tensor_and_per_channel():
    a, b = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5) * 2
    per_tensor = MaxCalibrator()
    per_channel = MaxCalibrator(axis=1)
    for x in (a, b):
        per_tensor.collect(x)
        per_channel.collect(x)
    both = torch.cat([a, b])
    assert per_tensor.compute_amax().item() == both.abs().max().item()
    assert torch.equal(per_channel.compute_amax(), both.abs().amax(dim=(0, 2, 3)))


@pytest.mark.parametrize("calibrator", [MaxCalibrator(), HistogramCalibrator()])
def test_compute_before_data_raises(calibrator):
    with pytest.raises(RuntimeError, match="before any data"):
        calibrator.compute_amax()


def test_histogram_grows_without_losing_counts():
    calibrator = HistogramCalibrator(num_bins=256)
    batches = [torch.randn(10_000) * scale for scale in (0.01, 1.0, 50.0)]
    for x in batches:
        calibrator.collect(x)
    counts, edges = calibrator.histogram()
    assert counts.sum().item() == 30_000
    assert edges[-1] >= max(x.abs().max() for x in batches)
    assert len(counts) <= 4 * 256


def test_percentile_matches_torch_quantile():
    x = torch.randn(200_000)
    calibrator = HistogramCalibrator()
    for chunk in x.split(50_000):
        calibrator.collect(chunk)
    for p in (99.0, 99.9, 99.99):
        expected = torch.quantile(x.abs(), p / 100).item()
        assert calibrator.compute_amax("percentile", p).item() == pytest.approx(expected, rel=0.02)


def quant_mse(x: torch.Tensor, amax: float) -> float:
    scale = amax / 127
    return ((torch.clamp(torch.round(x / scale), -128, 127) * scale - x) ** 2).mean().item()


@pytest.mark.parametrize("distribution", ["laplace", "gaussian"])
def test_mse_amax_is_near_the_brute_force_optimum(distribution):
    generator = torch.Generator().manual_seed(1)
    if distribution == "laplace":
        x = torch.distributions.Laplace(0.0, 1.0).sample((200_000,))
    else:
        x = torch.randn(200_000, generator=generator)
    calibrator = HistogramCalibrator()
    calibrator.collect(x)
    chosen = calibrator.compute_amax("mse").item()
    grid = np.linspace(0.2, x.abs().max().item(), 400)
    best = min(quant_mse(x, a) for a in grid)
    assert quant_mse(x, chosen) <= best * 1.02


def reference_entropy_amax(hist, edges, levels=128):
    """TensorRT's KL-divergence calibration, written plainly (loops, no vectorisation)."""
    hist = [float(v) for v in hist]
    n = len(hist)
    best_i, best_kl = None, float("inf")
    for i in range(levels, n):
        p = hist[:i]
        p[i - 1] += sum(hist[i:])
        group = i // levels
        q = [0.0] * i
        for j in range(levels):
            start = j * group
            stop = i if j == levels - 1 else start + group
            nonzero = [k for k in range(start, stop) if hist[k] != 0]
            total = sum(hist[start:stop])
            for k in nonzero:
                q[k] = total / len(nonzero)
        ps, qs = sum(p), sum(q)
        kl = 0.0
        for pk, qk in zip(p, q):
            if pk > 0:
                kl = float("inf") if qk == 0 else kl + pk / ps * np.log((pk / ps) / (qk / qs))
        if kl < best_kl:
            best_i, best_kl = i, kl
    return edges[best_i]


def test_entropy_matches_reference_implementation():
    rng = np.random.default_rng(0)
    values = np.abs(np.concatenate([rng.laplace(size=50_000), rng.normal(size=50_000) * 3]))
    hist, edges = np.histogram(values, bins=512, range=(0, values.max()))
    expected = reference_entropy_amax(hist, edges)
    assert entropy_amax(hist, edges) == pytest.approx(expected, rel=0.02)


def test_amax_functions_reject_empty_histograms():
    with pytest.raises(ValueError, match="empty"):
        mse_amax(np.zeros(256), np.linspace(0, 1, 257))
    with pytest.raises(ValueError, match="percentile"):
        percentile_amax(np.ones(256), np.linspace(0, 1, 257), 0)


def test_all_zero_tensor_calibrates_to_zero():
    calibrator = HistogramCalibrator()
    calibrator.collect(torch.zeros(100))
    assert calibrator.compute_amax("entropy").item() == 0.0
