"""Choosing amax from a histogram of |x|: pure functions on `(hist, bin_edges)`.

`hist[k]` counts the values whose magnitude falls in `[bin_edges[k], bin_edges[k+1])`;
`bin_edges` starts at 0. Each function returns the chosen amax as a float.
"""

from __future__ import annotations

import numpy as np
import torch


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


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * x))  # no overflow for large |x|


# Where a quantization error is measured: on the value itself, or after the sigmoid that
# reads it next (a YOLO head's raw outputs: an error on a logit far from 0 changes no
# score and no box). A |x| histogram serves both: the sigmoid's error is the same at -x.
ERROR_SPACES = {"linear": lambda x: x, "sigmoid": _sigmoid}


def mse_amax(
    hist: np.ndarray,
    bin_edges: np.ndarray,
    num_bits: int = 8,
    start_bin: int = 128,
    stride: int = 1,
    error_space: str = "linear",
) -> float:
    """The amax, among the bin edges from `start_bin` on, that minimises the expected
    squared quantization error of the histogrammed values (bin centres as proxies),
    measured in `error_space` (see `ERROR_SPACES`)."""
    hist, bin_edges = _as_arrays(hist, bin_edges)
    read = ERROR_SPACES[error_space]
    max_bound = 2 ** (num_bits - 1) - 1
    centres = (bin_edges[:-1] + bin_edges[1:]) / 2
    candidates = bin_edges[_candidate_indices(len(hist), start_bin, stride)]
    best_amax, best_error = float(candidates[-1]), np.inf
    # Chunked so that (candidates x bins) stays small in memory.
    for chunk in np.array_split(candidates, max(1, len(candidates) // 256)):
        scale = chunk[:, None] / max_bound
        dequantized = np.minimum(np.round(centres[None, :] / scale), max_bound) * scale
        errors = ((read(dequantized) - read(centres[None, :])) ** 2 * hist[None, :]).sum(axis=1)
        k = int(np.argmin(errors))
        if errors[k] < best_error:
            best_amax, best_error = float(chunk[k]), float(errors[k])
    return best_amax


def entropy_amax(hist, bin_edges, num_bits: int = 8, start_bin: int = 128,
                 stride: int = 1) -> float:
    """NVIDIA's entropy calibration (TensorRT's, as Model Optimizer computes it): the
    threshold whose quantization to 2**(num_bits-1) levels diverges least, in KL
    divergence, from the histogram clipped there.

    The first bin counts as much as the second: it holds the exact zeros (ReLU outputs,
    padding), which would otherwise outweigh every other bin. For each candidate `i` in
    `start_bin, start_bin + stride, ..., len(hist)`:
    - P is the first `i` bins, with the counts beyond them folded into bin `i - 1`;
    - Q puts bin `j < i` in level `floor(j * levels / i)` and spreads each level's count
      evenly over its non-empty bins (empty bins stay empty);
    - the divergence is KL(P || Q) of the two normalised, infinite where Q misses mass.
    Of the candidates within `TIE` of the least divergence the largest wins; the amax is
    `bin_edges[i]`. `hist` is a numpy array or a tensor: every candidate is evaluated at
    once, on the tensor's device.
    """
    hist, bin_edges = _as_tensors(hist, bin_edges)
    counts = hist.clone()
    if len(counts) > 1:
        counts[0] = counts[1]
    levels = 2 ** (num_bits - 1)
    first = min(max(1, start_bin), len(counts))
    candidates = torch.arange(first, len(counts) + 1, max(1, stride), device=counts.device)
    sums = _prefix_sums(counts)
    divergence = torch.cat([_divergences(sums, chunk, levels)
                            for chunk in candidates.split(_CANDIDATE_CHUNK)])
    return float(bin_edges[candidates[_last_minimum(divergence)]])


# Candidates evaluated together: bounds the (candidates x levels) temporaries to a few MB.
_CANDIDATE_CHUNK = 4096

# Divergences this close count as equal (the largest threshold wins, as in the reference).
# Well above the rounding of the prefix-sum evaluation (~1e-14 for 1e9 counts), well below
# what moving one count of a billion changes.
TIE = 1e-12


def _prefix_sums(counts: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Running sums, from 0, of the counts, of the non-empty bins and of
    count * log(count / unit): a level's or a clipped histogram's totals are then two
    lookups. `unit`, the mean non-empty count, keeps the logs small, and with them the
    rounding of the differences that the divergence takes."""
    def running(values: torch.Tensor) -> torch.Tensor:
        return torch.cat([values.new_zeros(1), values.cumsum(0)])

    nonzero = (counts > 0).double()
    unit = counts.sum() / nonzero.sum().clamp(min=1)
    return running(counts), running(nonzero), running(torch.xlogy(counts, counts / unit)), unit


def _divergences(sums: tuple[torch.Tensor, ...], i: torch.Tensor, levels: int) -> torch.Tensor:
    """KL(P || Q) of `entropy_amax` for each candidate `i`, from the prefix sums alone.

    With T the total, S the count of the first i bins and O = T - S the count beyond:
    KL = (sum P log P - sum P log Q) / T + log(S / T), where
    sum P log P = sum_{j < i-1} B_j log B_j + (B_{i-1} + O) log(B_{i-1} + O) and
    sum P log Q = sum over levels of c log(c / m) + O log Q_{i-1}, c and m being a level's
    count and its number of non-empty bins: O(levels) per candidate, not O(bins). Both
    sums take their logs of counts / unit, which changes each by the same T log(unit).
    """
    count, nonzero, xlogx, unit = sums
    total = count[-1]
    # Level l holds bins [ceil(l * i / levels), ceil((l + 1) * i / levels)); levels is a
    # power of two, so the division is a shift.
    shift = levels.bit_length() - 1
    steps = torch.arange(levels + 1, device=i.device)
    bounds = (i[:, None] * steps + levels - 1) >> shift
    c, m = count[bounds].diff(dim=1), nonzero[bounds].diff(dim=1)
    log_q = torch.where(c > 0, torch.log(c / (m.clamp(min=1) * unit)), 0.0)
    kept = count[i]
    outside = total - kept
    last = count[i] - count[i - 1]
    log_q_last = log_q.gather(1, ((i - 1) * levels // i)[:, None]).squeeze(1)  # bin i-1's level
    p_log_p = xlogx[i - 1] + torch.xlogy(last + outside, (last + outside) / unit)
    p_log_q = (c * log_q).sum(dim=1) + outside * log_q_last
    divergence = (p_log_p - p_log_q) / total + torch.log(kept / total)
    # Q is empty where P is not: at bin i - 1 when it is empty but outliers fold into it.
    missing = (kept == 0) | ((last == 0) & (outside > 0))
    return torch.where(missing, torch.inf, divergence)


def _last_minimum(divergence: torch.Tensor) -> int:
    """Index of the last divergence within `TIE` of the least; the last index when none
    is finite (no candidate can represent the histogram: keep the whole range)."""
    finite = torch.isfinite(divergence)
    if not finite.any():
        return len(divergence) - 1
    least = divergence[finite].min()
    return int(torch.nonzero(finite & (divergence <= least + TIE)).max())


def _candidate_indices(num_bins: int, start: int, stride: int):
    stop = num_bins + 1
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


def _as_tensors(hist, bin_edges) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 tensors, on the device `hist` is on (numpy arrays go to the CPU)."""
    hist = torch.as_tensor(hist).double()
    bin_edges = torch.as_tensor(bin_edges).double()
    if hist.dim() != 1 or bin_edges.shape != (len(hist) + 1,):
        raise ValueError("expected hist of n bins and n + 1 bin_edges")
    if hist.sum() <= 0:
        raise ValueError("the histogram is empty")
    return hist, bin_edges
