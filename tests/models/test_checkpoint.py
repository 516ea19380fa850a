"""Loading checkpoints in the official format, and refusing anything else.

The official repositories pickle whole models whose classes live in modules
named ``models.yolo`` and ``models.common``. These tests write throwaway
classes under those names (attributes and forward as in the official code),
save a checkpoint the official way in one subprocess, and load it with yoloq
in another one that cannot import them.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

from yoloq.errors import YoloqError
from yoloq.models import build_model, load_checkpoint, load_model

FAKE_COMMON = """
import torch
from torch import nn


class Conv(nn.Module):
    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU() if act is True else act

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class MP(nn.Module):
    def __init__(self, k=2):
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=k)

    def forward(self, x):
        return self.m(x)


class Concat(nn.Module):
    def __init__(self, dimension=1):
        super().__init__()
        self.d = dimension

    def forward(self, x):
        return torch.cat(x, self.d)


class ImplicitA(nn.Module):
    def __init__(self, channel):
        super().__init__()
        self.channel = channel
        self.implicit = nn.Parameter(torch.randn(1, channel, 1, 1) * 0.1)

    def forward(self, x):
        return self.implicit + x


class ImplicitM(nn.Module):
    def __init__(self, channel):
        super().__init__()
        self.channel = channel
        self.implicit = nn.Parameter(1 + torch.randn(1, channel, 1, 1) * 0.1)

    def forward(self, x):
        return self.implicit * x
"""

FAKE_YOLO = """
import torch
from torch import nn

from models.common import ImplicitA, ImplicitM


def make_grid(nx, ny):
    yv, xv = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
    return torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2).float()


class Detect(nn.Module):  # YOLOv5 v7.0 layout: only an `anchors` buffer
    stride = None

    def __init__(self, nc, anchors, ch):
        super().__init__()
        self.nc, self.no, self.nl, self.na = nc, nc + 5, len(anchors), len(anchors[0]) // 2
        self.grid = [torch.empty(0) for _ in range(self.nl)]
        self.anchor_grid = [torch.empty(0) for _ in range(self.nl)]
        self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)

    def level(self, i, x):
        return self.m[i](x)

    def anchor_size(self, i):
        return (self.anchors[i] * self.stride[i]).view(1, self.na, 1, 1, 2)

    def forward(self, x):
        z = []
        for i in range(self.nl):
            x[i] = self.level(i, x[i])
            bs, _, ny, nx = x[i].shape
            x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            y = x[i].sigmoid()
            y[..., 0:2] = (y[..., 0:2] * 2.0 - 0.5 + make_grid(nx, ny)) * self.stride[i]
            y[..., 2:4] = (y[..., 2:4] * 2) ** 2 * self.anchor_size(i)
            z.append(y.view(bs, -1, self.no))
        return torch.cat(z, 1), x


class IDetect(Detect):  # YOLOv7 layout: `anchors` and `anchor_grid` buffers, implicit layers
    def __init__(self, nc, anchors, ch):
        super().__init__(nc, anchors, ch)
        del self.anchor_grid
        a = torch.tensor(anchors).float().view(self.nl, -1, 2)
        self.register_buffer("anchor_grid", a.clone().view(self.nl, 1, -1, 1, 1, 2))
        self.ia = nn.ModuleList(ImplicitA(c) for c in ch)
        self.im = nn.ModuleList(ImplicitM(self.no * self.na) for _ in ch)

    def level(self, i, x):
        return self.im[i](self.m[i](self.ia[i](x)))

    def anchor_size(self, i):
        return self.anchor_grid[i]


class Model(nn.Module):
    def __init__(self, cfg, layers, save):
        super().__init__()
        self.yaml = cfg
        self.model = nn.Sequential(*layers)
        self.save = save
        self.names = [str(i) for i in range(cfg["nc"])]

    def forward(self, x):
        y = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        return x
"""

# Builds the tiny model with the throwaway classes, saves it the official way,
# and saves the reference output of the model cast through half precision.
SAVE_SCRIPT = """
import copy, sys
import numpy as np
import torch
from torch import nn
from models.common import MP, Concat, Conv
from models.yolo import Detect, IDetect, Model

flavour, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
anchors = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]]
pool, pool_cfg = (MP, [-1, 1, "MP", []]) if flavour == "v7" else (
    lambda: nn.MaxPool2d(2, 2), [-1, 1, "nn.MaxPool2d", [2, 2]])
head_cls, head_name = (IDetect, "IDetect") if flavour == "v7" else (Detect, "Detect")
cfg = {
    "nc": 3, "depth_multiple": 1.0, "width_multiple": 1.0, "anchors": anchors,
    "backbone": [
        [-1, 1, "Conv", [8, 3, 2, None, 1, "nn.LeakyReLU(0.1)"]],
        [-1, 1, "Conv", [16, 3, 2]],
        pool_cfg,
        [-1, 1, "Conv", [16, 1, 1]],
        pool_cfg,
        [-1, 1, "Conv", [32, 3, 1]],
    ],
    "head": [
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, 3], 1, "Concat", [1]],
        [[7, 5], 1, head_name, ["nc", "anchors"]],
    ],
}
layers = [
    Conv(3, 8, 3, 2, act=nn.LeakyReLU(0.1)), Conv(8, 16, 3, 2), pool(), Conv(16, 16, 1, 1),
    pool(), Conv(16, 32, 3, 1), nn.Upsample(None, 2, "nearest"), Concat(1),
    head_cls(3, anchors, [48, 32]),
]
froms = [-1, -1, -1, -1, -1, -1, -1, [-1, 3], [7, 5]]
for i, (layer, f) in enumerate(zip(layers, froms)):
    layer.i, layer.f, layer.type, layer.np = i, f, type(layer).__name__, 0
model = Model(cfg, layers, save=[3, 5, 7])
head = model.model[-1]
head.stride = torch.tensor([8.0, 16.0])
head.anchors /= head.stride.view(-1, 1, 1)
model.stride = head.stride
with torch.no_grad():
    for p in model.parameters():
        p.add_(torch.randn_like(p) * 0.1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
model.eval()
if flavour == "v7":
    model.names = [f"v7_{i}" for i in range(3)]
    ckpt = {"epoch": -1, "best_fitness": None, "training_results": None,
            "model": copy.deepcopy(model).half(), "optimizer": None, "wandb_id": None}
else:  # YOLOv5 style: the EMA model is the one to use, names are a dict
    model.names = {i: f"v5_{i}" for i in range(3)}
    decoy = copy.deepcopy(model).half()
    for p in decoy.parameters():
        p.data.zero_()
    ckpt = {"epoch": 3, "best_fitness": np.float64(0.25), "model": decoy,
            "ema": copy.deepcopy(model).half(), "updates": 10, "optimizer": None,
            "opt": {"imgsz": 64, "hyp": {"lr0": 0.01}}, "date": "2022-11-22T00:00:00"}
torch.save(ckpt, out)
x = torch.rand(2, 3, 64, 64)
with torch.no_grad():
    reference = copy.deepcopy(model).half().float()(x)[0]
torch.save({"x": x, "y": reference}, out + ".reference")
"""

LOAD_SCRIPT = """
import json, sys
import torch
import yoloq.models

path = sys.argv[1]
importable = True
try:
    import models.yolo  # noqa: F401
except ImportError:
    importable = False
model = yoloq.models.load_checkpoint(path)
reference = torch.load(path + ".reference", weights_only=True)
with torch.no_grad():
    y = model(reference["x"])[0]
print(json.dumps({
    "fake_classes_importable": importable,
    "max_abs_error": (y - reference["y"]).abs().max().item(),
    "scale": reference["y"].abs().max().item(),
    "names": model.names,
    "training": model.training,
    "dtype": str(next(model.parameters()).dtype),
    "anchor_grid": any(k.endswith("anchor_grid") for k in model.state_dict()),
}))
"""


def _run(script: str, args: list[str], cwd, pythonpath: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    result = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("flavour", ["v7", "v5"])
def test_official_format_checkpoint_loads_without_its_classes(tmp_path, flavour):
    fake_root = tmp_path / "official"
    (fake_root / "models").mkdir(parents=True)
    (fake_root / "models" / "__init__.py").write_text("")
    (fake_root / "models" / "common.py").write_text(textwrap.dedent(FAKE_COMMON))
    (fake_root / "models" / "yolo.py").write_text(textwrap.dedent(FAKE_YOLO))
    checkpoint = tmp_path / f"{flavour}.pt"
    _run(SAVE_SCRIPT, [flavour, str(checkpoint)], cwd=fake_root, pythonpath=str(fake_root))

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    report = json.loads(_run(LOAD_SCRIPT, [str(checkpoint)], cwd=elsewhere, pythonpath=None))

    assert report["fake_classes_importable"] is False
    assert report["max_abs_error"] <= 1e-4 * report["scale"]
    assert report["names"] == [f"{flavour}_{i}" for i in range(3)]
    assert report["training"] is False and report["dtype"] == "torch.float32"
    assert report["anchor_grid"] is (flavour == "v7")


class _RunsShellCommand:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_before_running(tmp_path, writer):
    marker = tmp_path / "MARKER"
    payload = {"model": _RunsShellCommand(f"touch {marker}")}
    path = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(YoloqError, match=r"refusing to load global '(posix|os|nt)\.system'") as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)
    assert not marker.exists()


def test_truncated_foreign_and_bare_files_give_clear_errors(tmp_path):
    model = build_model("yolov5n")
    bare = tmp_path / "bare.pt"
    torch.save(model.state_dict(), bare)
    with pytest.raises(YoloqError, match="bare state_dict") as e:
        load_checkpoint(bare)
    assert str(bare) in str(e.value)

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(bare.read_bytes()[: bare.stat().st_size // 2])
    with pytest.raises(YoloqError, match="corrupt or truncated") as e:
        load_checkpoint(truncated)
    assert str(truncated) in str(e.value)

    text = tmp_path / "notes.pt"
    text.write_text("these are not weights\n")
    with pytest.raises(YoloqError, match="notes.pt"):
        load_checkpoint(text)

    with pytest.raises(YoloqError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_pickled_yoloq_model_round_trips_fused_or_not(tmp_path, randomize_batch_norm):
    model = randomize_batch_norm(build_model("yolov7-tiny", nc=4)).eval()
    model.names = ["a", "b", "c", "d"]
    x = torch.rand(1, 3, 64, 64)
    for fused in (False, True):
        if fused:
            model.fuse()
        path = tmp_path / f"yoloq-fused-{fused}.pt"
        torch.save({"model": model}, path)
        loaded = load_model(path)
        with torch.no_grad():
            assert torch.allclose(loaded(x)[0], model(x)[0], rtol=1e-4, atol=1e-4)
        assert loaded.names == model.names and loaded.model[-1].fused is fused


def test_load_model_reads_yoloq_float_checkpoints(tmp_path):
    from yoloq.models.native import save_float_checkpoint

    model = build_model("yolov5n", nc=2).eval()
    model.names = ["cat", "dog"]
    path = save_float_checkpoint(model, tmp_path / "float.pt", img_size=64, half=False)
    loaded = load_model(path)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x)[0], model(x)[0], rtol=1e-5, atol=1e-5)
    assert loaded.names == ["cat", "dog"] and not loaded.training
