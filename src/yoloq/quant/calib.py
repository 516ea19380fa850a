"""Calibrators: statistics of the tensors a quantizer sees, turned into amax.

Every calibrator has the same protocol: `collect(x)` per batch, `compute_amax(...)`
at the end, `reset()` to start over. They hold statistics only; the quantizer
holds the resulting amax, and `yoloq.quant.amax` holds the math.
"""

from __future__ import annotations

import math

import torch

from yoloq.quant import amax as amax_math

HISTOGRAM_METHODS = ("entropy", "mse", "percentile")

# torch.histc counts in float32, which stops counting exactly past 2**24 per bin:
# large tensors are histogrammed in chunks and accumulated in float64.
_HISTC_CHUNK = 2**24


class MaxCalibrator:
    """Running maximum of |x|, per tensor or per channel along `axis`."""

    def __init__(self, axis: int | None = None):
        self.axis = axis
        self._amax: torch.Tensor | None = None

    def collect(self, x: torch.Tensor) -> None:
        x = x.detach()
        if self.axis is None:
            low, high = torch.aminmax(x)
            amax = torch.maximum(-low, high).float()
        else:
            dims = [d for d in range(x.dim()) if d != self.axis]
            amax = x.abs().amax(dim=dims).float()
        if self._amax is None:
            self._amax = amax
        elif self._amax.shape != amax.shape:
            raise ValueError(f"channel count changed from {tuple(self._amax.shape)} to "
                             f"{tuple(amax.shape)} between batches")
        else:
            self._amax = torch.maximum(self._amax, amax)

    def compute_amax(self) -> torch.Tensor:
        if self._amax is None:
            raise RuntimeError("MaxCalibrator.compute_amax called before any data was collected")
        return self._amax.clone()

    def reset(self) -> None:
        self._amax = None


class HistogramCalibrator:
    """One histogram of |x| across all batches, on the data's device.

    The first batch sets the bin width (its max / num_bins); later batches with
    larger values add bins of the same width. Past 4 * num_bins bins, neighbouring
    bins are merged in pairs, so memory stays bounded and no count is ever lost.
    """

    def __init__(self, num_bits: int = 8, num_bins: int = 2048):
        self.num_bits = num_bits
        self.num_bins = num_bins
        self.reset()

    def reset(self) -> None:
        self._hist: torch.Tensor | None = None
        self._width = 0.0
        self._max_seen = 0.0

    def collect(self, x: torch.Tensor) -> None:
        x = x.detach().float()
        low, high = torch.aminmax(x)
        x_max = max(-low.item(), high.item())
        self._max_seen = max(self._max_seen, x_max)
        if self._hist is None:
            self._start(x_max, x.device)
        elif x_max > self._range:
            self._grow(x_max)
        magnitudes = x.abs().flatten()
        for chunk in magnitudes.split(_HISTC_CHUNK):
            self._hist += torch.histc(chunk, len(self._hist), 0.0, self._range).double()

    @property
    def _range(self) -> float:
        return self._width * len(self._hist)

    def _start(self, x_max: float, device: torch.device) -> None:
        # An all-zero first batch still needs a positive width.
        self._width = (x_max if x_max > 0 else 1e-8) / self.num_bins
        self._hist = torch.zeros(self.num_bins, dtype=torch.float64, device=device)

    def _grow(self, x_max: float) -> None:
        needed = math.ceil(x_max / self._width * (1 + 1e-6))
        while needed > 4 * self.num_bins:
            if len(self._hist) % 2:
                self._hist = torch.cat([self._hist, self._hist.new_zeros(1)])
            self._hist = self._hist.view(-1, 2).sum(dim=1)
            self._width *= 2
            needed = math.ceil(x_max / self._width * (1 + 1e-6))
        extra = needed - len(self._hist)
        if extra > 0:
            self._hist = torch.cat([self._hist, self._hist.new_zeros(extra)])

    def histogram(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(counts, bin_edges) of |x| collected so far, on the CPU."""
        if self._hist is None:
            raise RuntimeError("HistogramCalibrator has collected no data")
        counts = self._hist.cpu()
        edges = torch.arange(len(counts) + 1, dtype=torch.float64) * self._width
        return counts, edges

    def compute_amax(self, method: str = "entropy", percentile: float = 99.99) -> torch.Tensor:
        """amax by `method` ("entropy", "mse" or "percentile"), as a scalar tensor."""
        if method not in HISTOGRAM_METHODS:
            raise ValueError(f"unknown histogram method {method!r}; use one of {HISTOGRAM_METHODS}")
        if self._hist is None:
            raise RuntimeError("HistogramCalibrator.compute_amax called before any data was "
                               "collected")
        counts, edges = (t.numpy() for t in self.histogram())
        if self._max_seen == 0:
            return torch.tensor(0.0)  # only zeros seen: a dead tensor
        # Keep the candidate search at about num_bins thresholds however far the range grew.
        stride = max(1, len(counts) // self.num_bins)
        if method == "percentile":
            value = amax_math.percentile_amax(counts, edges, percentile)
        elif method == "mse":
            value = amax_math.mse_amax(counts, edges, self.num_bits, stride=stride)
        else:
            value = amax_math.entropy_amax(counts, edges, self.num_bits, stride=stride)
        return torch.tensor(value, dtype=torch.float32)
