from __future__ import annotations

import json

import torch
from torch import nn

import yoloq.runtime.backends
from yoloq.cli import main


class CentreBoxModel(nn.Module):
    """A stand-in detector: one box per class over the middle of every image."""

    def __init__(self, nc: int = 3):
        super().__init__()
        self.nc, self.names, self.img_size = nc, [f"c{i}" for i in range(nc)], 64
        self.register_buffer("stride", torch.tensor([8.0, 16.0, 32.0]))
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        b, _, height, width = x.shape
        pred = torch.zeros(b, self.nc, 5 + self.nc)
        pred[..., :4] = torch.tensor([width / 2, height / 2, width / 2, height / 2])
        pred[..., 4] = x.mean((1, 2, 3))[:, None] * self.scale
        pred[..., 5:] = torch.eye(self.nc) * 0.9
        return pred, None


def test_eval_cli_writes_json(labelled_dataset, tmp_path, monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(
        yoloq.runtime.backends, "load_model", lambda w: seen.append(w) or CentreBoxModel()
    )
    out = tmp_path / "result.json"
    argv = ["eval", "--weights", "w.pt", "--data", str(labelled_dataset), "--batch", "4"]
    assert main([*argv, "--workers", "0", "--out", str(out)]) == 0
    assert seen == ["w.pt"]
    result = json.loads(out.read_text())
    assert result["images"] == 6 and 0 <= result["map50_95"] <= result["map50"] <= 1
    assert result["settings"]["img_size"] == 64 and set(result["per_class_ap"]) == {
        "circle",
        "square",
        "triangle",
    }
    printed = capsys.readouterr().out
    assert "AP @[.50:.95] all" in printed and "triangle" in printed


def test_eval_cli_class_count_mismatch(labelled_dataset, monkeypatch, capsys):
    monkeypatch.setattr(yoloq.runtime.backends, "load_model", lambda w: CentreBoxModel(5))
    assert main(["eval", "--weights", "w.pt", "--data", str(labelled_dataset)]) == 2
    assert "model has 5 classes" in capsys.readouterr().err
