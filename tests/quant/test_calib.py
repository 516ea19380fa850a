import math

import numpy as np
import pytest
import torch

from yoloq.quant import HistogramCalibrator, MaxCalibrator, QuantSpec
from yoloq.quant.amax import mse_amax, percentile_amax
from yoloq.quant.calib import MAX_GROWTH


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
    assert len(counts) <= MAX_GROWTH * 256


def test_histogram_grows_with_the_first_batch_width():
    # Model Optimizer's rule: the first batch's max / num_bins stays the bin width, and a
    # wider batch adds bins up to ceil(max / width): here 10x the first range, unmerged.
    generator = torch.Generator().manual_seed(0)
    first = torch.rand(5000, generator=generator) * 2 - 1
    later = torch.randn(5000, generator=generator) * 4
    calibrator = HistogramCalibrator(num_bins=256)
    calibrator.collect(first)
    calibrator.collect(later)
    counts, edges = calibrator.histogram()
    width = first.abs().max().item() / 256
    assert len(counts) == math.ceil(later.abs().max().item() / width) > 4 * 256
    assert edges[1].item() == pytest.approx(width)
    assert edges[-1] >= later.abs().max()
    expected = torch.histc(first.abs(), 256, 0, first.abs().max().item())
    expected = torch.cat([expected, torch.zeros(len(counts) - 256)])
    expected += torch.histc(later.abs(), len(counts), 0, edges[-1].item())
    assert torch.equal(counts.float(), expected)


def test_histogram_bins_as_histc_does():
    x = torch.randn(300_000, generator=torch.Generator().manual_seed(2)) * 3
    calibrator = HistogramCalibrator(num_bins=2048)
    calibrator.collect(x)
    counts, _ = calibrator.histogram()
    assert torch.equal(counts.float(), torch.histc(x.abs(), 2048, 0, x.abs().max().item()))


def test_histogram_refuses_non_finite_values():
    calibrator = HistogramCalibrator()
    with pytest.raises(ValueError, match="inf or NaN"):
        calibrator.collect(torch.tensor([1.0, float("nan")]))


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


def test_amax_functions_reject_empty_histograms():
    with pytest.raises(ValueError, match="empty"):
        mse_amax(np.zeros(256), np.linspace(0, 1, 257))
    with pytest.raises(ValueError, match="percentile"):
        percentile_amax(np.ones(256), np.linspace(0, 1, 257), 0)


def test_all_zero_tensor_calibrates_to_zero():
    calibrator = HistogramCalibrator()
    calibrator.collect(torch.zeros(100))
    assert calibrator.compute_amax("entropy").item() == 0.0


def test_sigmoid_space_amax_gives_up_far_logits_for_the_ones_that_score():
    """Logits as a YOLO head writes them: most far below zero (background objectness),
    a few near it. In its own space the squared error wants the far ones covered; after
    the sigmoid they all read ~0 whatever their rounding, and the near ones decide."""
    torch.manual_seed(0)
    logits = torch.cat([-20 - 20 * torch.rand(200_000), 4 * torch.randn(20_000)])

    def sigmoid_error(amax: float) -> float:
        scale = amax / 127
        rounded = torch.clamp(torch.round(logits / scale), -127, 127) * scale
        return float(((torch.sigmoid(rounded) - torch.sigmoid(logits)) ** 2).mean())

    def amax_in(space: str) -> float:
        calibrator = HistogramCalibrator(error_space=space)
        calibrator.collect(logits)
        return float(calibrator.compute_amax("entropy"))  # any method: sigmoid space wins

    linear, sigmoid = amax_in("linear"), amax_in("sigmoid")
    assert linear > 20 and sigmoid < 15, (linear, sigmoid)
    assert sigmoid_error(sigmoid) < 0.5 * sigmoid_error(linear)
    with pytest.raises(ValueError, match="error_space"):
        QuantSpec(error_space="tanh")


def test_a_quantized_head_calibrates_its_outputs_in_sigmoid_space(tiny_yolo, tmp_path):
    """The ort profile with the head quantized: only the head convolutions' output
    quantizers read their error after the sigmoid, and a saved checkpoint keeps that."""
    from yoloq.models.native import load_float_checkpoint
    from yoloq.models.quantized import load_quantized, quantize_yolo, save_quantized
    from yoloq.quant import calibrate, iter_quantizers

    model = load_float_checkpoint(tiny_yolo).fuse()
    _, _, config = quantize_yolo(model, "ort", keep_head_float=False)
    head = f"model.{model.head.i}."

    def sigmoid_sites(model):
        return {path for path, q in iter_quantizers(model) if q.spec.error_space == "sigmoid"}

    expected = {path for path, _ in iter_quantizers(model)
                if path.startswith(head) and path.endswith("output_quantizer")}
    assert expected and sigmoid_sites(model) == expected
    calibrate(model, [torch.rand(2, 3, 64, 64)], method="mse", show_progress=False)
    path = save_quantized(model, tmp_path / "ptq.pt", "ort", config, 64)
    assert sigmoid_sites(load_quantized(path)) == expected
    float_head = load_float_checkpoint(tiny_yolo).fuse()
    quantize_yolo(float_head, "ort")  # the head float: no such quantizer
    assert not sigmoid_sites(float_head)
