"""A backend registered from outside yoloq is found by `yoloq eval` and `yoloq bench` by
name (and by its file suffix) without any other file knowing it."""

from __future__ import annotations

import json

import pytest
import torch

from yoloq.cli import main
from yoloq.runtime.backends import BACKENDS, register_backend
from yoloq.runtime.bench import BenchResult, BenchStats
from yoloq.runtime.predictor import Backend, Predictor

NAMES = ["circle", "square", "triangle"]


def centre_boxes(images: torch.Tensor) -> torch.Tensor:
    """One box per class over the middle of each image, scored by its brightness."""
    batch, _, height, width = images.shape
    predictions = torch.zeros(batch, len(NAMES), 5 + len(NAMES))
    predictions[..., :4] = torch.tensor([width / 2, height / 2, width / 2, height / 2])
    predictions[..., 4] = images.mean((1, 2, 3))[:, None]
    predictions[..., 5:] = torch.eye(len(NAMES)) * 0.9
    return predictions


class StandInBackend(Backend):
    """Runs `centre_boxes` for any file ending in .standin; times nothing, counts calls."""

    name = "standin"
    suffixes = (".standin",)

    def __init__(self):
        self.loaded, self.benched = [], []

    def load(self, path, device=None) -> Predictor:
        self.loaded.append((path.name, device))
        return Predictor(centre_boxes, list(NAMES), 64, 32, str(path), self.name, "int8", "trt")

    def bench(self, paths, batch_sizes, img_size=None, **options) -> BenchResult:
        self.benched.append(([p.name if hasattr(p, "name") else p for p in paths],
                             tuple(batch_sizes), img_size, options.get("iters")))
        stats = tuple(BenchStats(str(path), batch, 1.0 + index, 2.0, batch * 1000.0,
                                 1.0 + index, note="stand-in")
                      for batch in batch_sizes for index, path in enumerate(paths))
        return BenchResult(tuple(map(str, paths)), stats, {"iters": options.get("iters")})


@pytest.fixture
def standin():
    backend = register_backend(StandInBackend())
    yield backend
    BACKENDS.pop(backend.name)


@pytest.mark.parametrize("by_name", [True, False])
def test_eval_runs_a_registered_backend(standin, labelled_dataset, tmp_path, by_name):
    weights = tmp_path / ("model.onnx" if by_name else "model.standin")  # never read
    out = tmp_path / "result.json"
    argv = ["eval", "--weights", str(weights), "--data", str(labelled_dataset), "--batch", "4",
            "--workers", "0", "--out", str(out)]
    assert main([*argv, *(["--backend", "standin"] if by_name else [])]) == 0
    assert standin.loaded == [(weights.name, "cpu")]
    result = json.loads(out.read_text())
    assert result["settings"]["backend"] == "standin" and result["images"] == 6
    assert result["detections"] == 6 * len(NAMES)  # its boxes, one per class and image


def test_bench_times_on_a_registered_backend(standin, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "a.standin", "--vs", "b.standin", "--batch", "1,2", "--iters", "7",
            "--img", "64", "--json", str(out)]
    assert main(argv) == 0
    assert standin.benched == [(["b.standin", "a.standin"], (1, 2), 64, 7)]
    saved = json.loads(out.read_text())
    assert [s["model"] for s in saved["stats"]] == ["b.standin", "a.standin"] * 2
    assert "ratio to b.standin" in capsys.readouterr().out


def test_an_unknown_backend_is_named_with_the_known_ones(labelled_dataset, capsys):
    assert main(["eval", "--weights", "m.onnx", "--data", str(labelled_dataset),
                 "--backend", "nosuch"]) == 2
    error = capsys.readouterr().err
    assert "unknown backend 'nosuch'" in error and "onnxruntime" in error
