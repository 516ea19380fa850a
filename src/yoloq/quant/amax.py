"""Choosing amax from a histogram of |x|: pure functions on `(hist, bin_edges)`.

`hist[k]` counts the values whose magnitude falls in `[bin_edges[k], bin_edges[k+1])`;
`bin_edges` starts at 0. Each function returns the chosen amax as a float.
"""

from __future__ import annotations

import numpy as np


def percentile_amax(hist: np.ndarray, bin_edges: np.ndarray, percentile: float = 99.99) -> float:
    """The `percentile`-th percentile of |x|, interpolated linearly inside its bin."""
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    hist, bin_edges = _as_arrays(hist, bin_edges)
    cdf = np.cumsum(hist)
    target = cdf[-1] * percentile / 100.0
    k = min(int(np.searchsorted(cdf, target, side="left")), len(hist) - 1)
    below = cdf[k - 1] if k > 0 else 0.0
    fraction = (target - below) / hist[k] if hist[k] > 0 else 1.0
    return float(bin_edges[k] + fraction * (bin_edges[k + 1] - bin_edges[k]))


def mse_amax(
    hist: np.ndarray,
    bin_edges: np.ndarray,
    num_bits: int = 8,
    start_bin: int = 128,
    stride: int = 1,
) -> float:
    """The amax, among the bin edges from `start_bin` on, that minimises the expected
    squared quantization error of the histogrammed values (bin centres as proxies)."""
    hist, bin_edges = _as_arrays(hist, bin_edges)
    max_bound = 2 ** (num_bits - 1) - 1
    centres = (bin_edges[:-1] + bin_edges[1:]) / 2
    candidates = bin_edges[_candidate_indices(len(hist), start_bin, stride)]
    best_amax, best_error = float(candidates[-1]), np.inf
    # Chunked so that (candidates x bins) stays small in memory.
    for chunk in np.array_split(candidates, max(1, len(candidates) // 256)):
        scale = chunk[:, None] / max_bound
        dequantized = np.minimum(np.round(centres[None, :] / scale), max_bound) * scale
        errors = ((dequantized - centres[None, :]) ** 2 * hist[None, :]).sum(axis=1)
        k = int(np.argmin(errors))
        if errors[k] < best_error:
            best_amax, best_error = float(chunk[k]), float(errors[k])
    return best_amax


def entropy_amax(
    hist: np.ndarray, bin_edges: np.ndarray, num_bits: int = 8, stride: int = 1
) -> float:
    """TensorRT's entropy calibration: the threshold whose quantized distribution
    (2**(num_bits-1) levels) diverges least, in KL divergence, from the clipped one.

    For each candidate threshold bin `i`: P is the histogram clipped at `i` (outliers
    folded into the last kept bin); Q merges the first `i` bins into the target number
    of levels and spreads each level's count evenly back over its non-empty bins.
    """
    hist, bin_edges = _as_arrays(hist, bin_edges)
    levels = 2 ** (num_bits - 1)
    if len(hist) <= levels:
        return float(bin_edges[-1])
    divergences = []
    candidates = _candidate_indices(len(hist), levels, stride, include_end=False)
    for i in candidates:
        divergences.append(_clipping_divergence(hist, int(i), levels))
    best = int(candidates[int(np.argmin(divergences))])
    return float(bin_edges[best])


def _clipping_divergence(hist: np.ndarray, i: int, levels: int) -> float:
    """KL(P || Q) for threshold bin `i` (see `entropy_amax`)."""
    kept = hist[:i]
    p = kept.copy()
    p[-1] += hist[i:].sum()
    # Merge `i` bins into `levels` groups; the last group takes the remainder.
    width = i // levels
    starts = np.arange(levels) * width
    group_sums = np.add.reduceat(kept, starts)
    nonzero = kept != 0
    group_nonzero = np.add.reduceat(nonzero.astype(np.float64), starts)
    sizes = np.diff(np.append(starts, i))
    per_bin = np.divide(group_sums, group_nonzero, out=np.zeros(levels), where=group_nonzero > 0)
    q = np.repeat(per_bin, sizes) * nonzero
    return _kl_divergence(p, q)


def _kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    p_total, q_total = p.sum(), q.sum()
    if p_total == 0 or q_total == 0:
        return np.inf
    p, q = p / p_total, q / q_total
    mask = p > 0
    if np.any(q[mask] == 0):
        return np.inf
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def _candidate_indices(num_bins: int, start: int, stride: int, include_end: bool = True):
    stop = num_bins + 1 if include_end else num_bins
    start = min(start, stop - 1)
    return np.arange(start, stop, max(1, stride))


def _as_arrays(hist, bin_edges) -> tuple[np.ndarray, np.ndarray]:
    hist = np.asarray(hist, dtype=np.float64)
    bin_edges = np.asarray(bin_edges, dtype=np.float64)
    if hist.ndim != 1 or bin_edges.shape != (len(hist) + 1,):
        raise ValueError("expected hist of n bins and n + 1 bin_edges")
    if hist.sum() <= 0:
        raise ValueError("the histogram is empty")
    return hist, bin_edges
