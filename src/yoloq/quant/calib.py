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

# Past this many times num_bins (a first batch far narrower than the rest), the histogram
# merges neighbouring bins in pairs instead of growing: a bound on memory and on the
# amax search, reached only by growth that Model Optimizer's calibrator would follow.
MAX_GROWTH = 16


class MaxCalibrator:
    """Running maximum of |x|, per tensor or per channel along `axis`."""

    def __init__(self, axis: int | None = None):
        self.axis = axis
        self._amax: torch.Tensor | None = None
        self._low_high: torch.Tensor | None = None  # per tensor: (lowest, highest) seen

    def collect(self, x: torch.Tensor) -> None:
        x = x.detach()
        if self.axis is None:
            low, high = torch.aminmax(x)
            amax = torch.maximum(-low, high).float()
            seen = torch.stack([low, high]).float()
            self._low_high = seen if self._low_high is None else torch.stack(
                [torch.minimum(self._low_high[0], seen[0]),
                 torch.maximum(self._low_high[1], seen[1])])
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

    def compute_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(lowest, highest) value seen, per tensor: an asymmetric grid's ends."""
        if self._low_high is None:
            raise RuntimeError("MaxCalibrator.compute_range called before any per-tensor data "
                               "was collected")
        return self._low_high[0].clone(), self._low_high[1].clone()

    def reset(self) -> None:
        self._amax = None
        self._low_high = None


class HistogramCalibrator:
    """One histogram of |x| across all batches, on the data's device, grown as Model
    Optimizer's (and pytorch_quantization's) histogram calibrator grows it.

    The first batch sets the bin width: its max / num_bins. A later batch with larger
    values extends the histogram with bins of the same width, to ceil(max / width) bins
    in all. Past `MAX_GROWTH` * num_bins bins, neighbouring bins are merged in pairs,
    so memory stays bounded; no count is ever lost.
    """

    def __init__(self, num_bits: int = 8, num_bins: int = 2048, error_space: str = "linear"):
        self.num_bits = num_bits
        self.num_bins = num_bins
        self.error_space = error_space
        self.reset()

    def reset(self) -> None:
        self._hist: torch.Tensor | None = None
        self._width = 0.0
        self._max_seen = 0.0

    def collect(self, x: torch.Tensor) -> None:
        x = x.detach().float()
        low, high = torch.stack(torch.aminmax(x)).tolist()  # one device sync, not two
        x_max = max(-low, high)
        if not math.isfinite(x_max):
            raise ValueError("HistogramCalibrator: the tensor holds inf or NaN values")
        self._max_seen = max(self._max_seen, x_max)
        if self._hist is None:
            self._start(x_max, x.device)
        elif x_max > self._range:
            self._grow(x_max)
        self._hist += _abs_histogram(x, len(self._hist), self._range)

    @property
    def _range(self) -> float:
        return self._width * len(self._hist)

    def _start(self, x_max: float, device: torch.device) -> None:
        # An all-zero first batch still needs a positive width.
        self._width = (x_max if x_max > 0 else 1e-8) / self.num_bins
        self._hist = torch.zeros(self.num_bins, dtype=torch.float64, device=device)

    def _grow(self, x_max: float) -> None:
        needed = _bins_to_cover(x_max, self._width)
        while needed > MAX_GROWTH * self.num_bins:
            if len(self._hist) % 2:
                self._hist = torch.cat([self._hist, self._hist.new_zeros(1)])
            self._hist = self._hist.view(-1, 2).sum(dim=1)
            self._width *= 2
            needed = _bins_to_cover(x_max, self._width)
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
        """amax by `method` ("entropy", "mse" or "percentile"; "max" gives the largest |x|
        seen, what a MaxCalibrator gives), as a scalar tensor on the histogram's device."""
        if method == "max" and self._hist is not None:
            return torch.tensor(self._max_seen, dtype=torch.float32, device=self._hist.device)
        if method not in HISTOGRAM_METHODS:
            raise ValueError(f"unknown histogram method {method!r}; use one of {HISTOGRAM_METHODS}")
        if self._hist is None:
            raise RuntimeError("HistogramCalibrator.compute_amax called before any data was "
                               "collected")
        device = self._hist.device
        if self._max_seen == 0:
            return torch.tensor(0.0, device=device)  # only zeros seen: a dead tensor
        if self.error_space != "linear":
            method = "mse"  # the least error where it matters, whatever the others use
        if method == "entropy":
            # Every threshold, as the reference tries them: the sweep is vectorised.
            edges = torch.arange(len(self._hist) + 1, dtype=torch.float64, device=device)
            value = amax_math.entropy_amax(self._hist, edges * self._width, self.num_bits)
        else:
            counts, edges = (t.numpy() for t in self.histogram())
            # About num_bins thresholds however far the range grew: MSE costs bins per try.
            stride = max(1, len(counts) // self.num_bins)
            if method == "percentile":
                value = amax_math.percentile_amax(counts, edges, percentile)
            else:
                value = amax_math.mse_amax(counts, edges, self.num_bits, stride=stride,
                                           error_space=self.error_space)
        return torch.tensor(value, dtype=torch.float32, device=device)


class SignedHistogramCalibrator:
    """The two ends of an asymmetric grid, each calibrated on its own side: a histogram
    of the positive values and one of the negatives' magnitudes (each with the other
    side's values at 0), so that each side has the resolution of a histogram of its own,
    and a histogram method thresholds it as it would |x| for a symmetric grid."""

    def __init__(self, num_bits: int = 8, num_bins: int = 2048, error_space: str = "linear"):
        self.positive = HistogramCalibrator(num_bits, num_bins, error_space)
        self.negative = HistogramCalibrator(num_bits, num_bins, error_space)

    def collect(self, x: torch.Tensor) -> None:
        x = x.detach().float()
        self.positive.collect(x.clamp(min=0))
        self.negative.collect(x.neg().clamp_(min=0))

    def compute_range(self, method: str = "entropy",
                      percentile: float = 99.99) -> tuple[torch.Tensor, torch.Tensor]:
        """(lower end, upper end) by `method` ("max": the lowest and highest values seen),
        each side thresholded as a symmetric grid's half: a little tighter than that
        side's share of 2**num_bits - 1 steps would allow."""
        low = self.negative.compute_amax(method, percentile)
        return -low, self.positive.compute_amax(method, percentile)

    def reset(self) -> None:
        self.positive.reset()
        self.negative.reset()


def _bins_to_cover(x_max: float, width: float) -> int:
    """ceil(x_max / width), plus one where rounding leaves x_max past the last edge."""
    bins = math.ceil(x_max / width)
    return bins + 1 if bins * width < x_max else bins


def _abs_histogram(x: torch.Tensor, bins: int, upper: float) -> torch.Tensor:
    """Counts of |x| in `bins` equal bins over [0, upper], upper >= max |x|, binned as
    histc bins on the CPU (|x| * bins / upper, truncated; upper itself in the last bin).
    The index and bincount are faster than histc there, and count exactly in int64."""
    index = x.abs().mul_(bins).div_(upper).int().clamp_(max=bins - 1)
    return torch.bincount(index.flatten(), minlength=bins)
