"""Entropy calibration against its definition, written out plainly with loops, on small
histograms (64 bins, 4 bits: 8 levels) of several shapes, ties included."""

import math

import numpy as np
import pytest
import torch

from yoloq.quant.amax import TIE, entropy_amax

LEVELS, NUM_BITS, START = 8, 4, 8


def kl_divergence(p: list[float], q: list[float]) -> float:
    """KL(p || q) of the two normalised; infinite where q misses mass that p has."""
    p_total, q_total = sum(p), sum(q)
    if q_total == 0:
        return math.inf
    divergence = 0.0
    for pj, qj in zip(p, q):
        if pj > 0:
            if qj == 0:
                return math.inf
            divergence += pj / p_total * math.log((pj / p_total) / (qj / q_total))
    return divergence


def quantized(bins: list[float], i: int, levels: int) -> list[float]:
    """Q of candidate i: bin j lies in the level whose linspace(0, i, levels + 1) interval
    holds j; a level's count is shared evenly by its non-empty bins."""
    edges = [level * i / levels for level in range(levels + 1)]
    q = [0.0] * i
    for level in range(levels):
        members = [j for j in range(i) if edges[level] <= j < edges[level + 1]]
        non_empty = [j for j in members if bins[j] > 0]
        for j in non_empty:
            q[j] = sum(bins[k] for k in members) / len(non_empty)
    return q


def brute_force_divergences(hist, levels=LEVELS, start=START, stride=1) -> dict[int, float]:
    """{candidate i: KL(P || Q)} of NVIDIA's entropy calibration, one candidate at a time."""
    bins = [float(v) for v in hist]
    bins[0] = bins[1]  # the first bin counts as much as the second
    divergences = {}
    for i in range(start, len(bins) + 1, stride):
        p = bins[:i]
        p[-1] += sum(bins[i:])  # what lies beyond the threshold is clipped to it
        divergences[i] = kl_divergence(p, quantized(bins, i, levels))
    return divergences


def brute_force_amax(hist, edges, **kwargs) -> float:
    divergences = brute_force_divergences(hist, **kwargs)
    least = min(divergences.values())
    # The last of the minima wins (equal within rounding).
    return float(edges[max(i for i, d in divergences.items() if d <= least + TIE)])


def histogram(values: np.ndarray, bins: int = 64):
    return np.histogram(np.abs(values), bins=bins, range=(0, np.abs(values).max()))


def shapes() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(3)
    edges = np.linspace(0, 1, 65)
    sparse = np.zeros(64)
    sparse[[3, 4, 9, 17, 30, 31, 50, 63]] = [40, 7, 25, 12, 3, 9, 1, 2]
    return {
        "gaussian": histogram(rng.normal(size=4000)),
        "laplace": histogram(rng.laplace(size=4000)),
        "relu": histogram(np.maximum(rng.normal(size=4000), 0)),  # half the values in bin 0
        "silu": histogram((z := rng.normal(size=4000) * 2) / (1 + np.exp(-z))),
        "outliers": histogram(np.append(rng.normal(size=4000), [25.0, -40.0])),
        "sparse": (sparse, edges),  # empty bins inside: Q keeps them empty
        "uniform": (np.full(64, 10.0), edges),  # best kept whole: the last candidate
        "first bin only": (np.append(10.0, np.zeros(63)), edges),  # no candidate is finite
    }


@pytest.mark.parametrize("name", list(shapes()))
def test_entropy_amax_equals_the_brute_force_definition(name):
    hist, edges = shapes()[name]
    assert entropy_amax(hist, edges, NUM_BITS, start_bin=START) == pytest.approx(
        brute_force_amax(hist, edges), rel=1e-12)


def test_entropy_amax_with_a_stride_and_on_tensors():
    hist, edges = shapes()["laplace"]
    expected = brute_force_amax(hist, edges, start=5, stride=3)
    got = entropy_amax(torch.from_numpy(hist), torch.from_numpy(edges), NUM_BITS,
                       start_bin=5, stride=3)
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("counts", [(5, 5), (3e8 + 1, 12345)])
def test_ties_go_to_the_largest_threshold(counts):
    # Counts in bins 0 (a copy of bin 1), 1 and 40 only: every threshold from 41 bins on
    # keeps all of them, bins 0 and 1 share a level with equal counts, bin 40 has one to
    # itself, so Q equals P (KL 0) for each; thresholds below 41 clip bin 40 onto an
    # empty bin (infinite). The reference keeps the largest of the tied thresholds.
    hist, edges = np.zeros(64), np.linspace(0, 1, 65)
    hist[[1, 40]] = counts
    divergences = brute_force_divergences(hist)
    assert all(divergences[i] == 0.0 for i in range(41, 65))
    assert all(math.isinf(divergences[i]) for i in range(START, 41))
    assert entropy_amax(hist, edges, NUM_BITS, start_bin=START) == 1.0  # edges[64]


@pytest.mark.parametrize("a, b", [(3, 99991), (7, 11), (1234567, 13)])
def test_ties_up_to_rounding_go_to_the_largest_threshold(a, b):
    # Two flat runs, then empty bins: several thresholds (48 and 64 bins among them) put
    # only equal counts in each level, so Q equals P exactly; a sweep that sums in another
    # order lands on those zeros only to within rounding, and must still call them ties.
    hist, edges = np.zeros(64), np.linspace(0, 1, 65)
    hist[:24], hist[24:40] = a, b
    divergences = brute_force_divergences(hist)
    assert divergences[48] == divergences[64] == 0.0
    assert entropy_amax(hist, edges, NUM_BITS, start_bin=START) == 1.0


def test_whole_range_wins_where_nothing_is_clipped_away():
    # A flat histogram is represented exactly only when kept whole: the last candidate,
    # which is the full range, must be among those tried.
    hist, edges = shapes()["uniform"]
    divergences = brute_force_divergences(hist)
    assert divergences[64] == 0.0 and min(divergences[i] for i in range(START, 64)) > 0
    assert entropy_amax(hist, edges, NUM_BITS, start_bin=START) == 1.0
