import json

import numpy as np
import pytest
import torch
from PIL import Image

from yoloq.cli import main
from yoloq.errors import YoloqError
from yoloq.predict import class_color, predict_images


class OneBoxPredictor:
    """Stands in for `load_predictor`'s result: one known box per image, class 1 of 2.

    The box is centred at (32, 32) with size 32 x 16 in input pixels of a 64 x 64 input;
    other anchors score zero.
    """

    names = ["circle", "square"]
    img_size = 64
    stride = 32
    description = "stand-in predictor"

    def __init__(self):
        self.shapes = []

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        assert images.dtype == torch.float32 and images.min() >= 0 and images.max() <= 1
        self.shapes.append(tuple(images.shape))
        raw = torch.zeros(images.shape[0], 10, 7)
        raw[:, :, :4] = torch.tensor([8.0, 8.0, 4.0, 4.0])
        raw[:, 3] = torch.tensor([32.0, 32.0, 32.0, 16.0, 0.9, 0.1, 0.8])
        return raw


@pytest.fixture
def images(tmp_path):
    """A wide 200 x 100 image and a tall 50 x 100 one, in a folder."""
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (200, 100), (0, 128, 0)).save(folder / "wide.png")
    Image.new("RGB", (50, 100), (0, 0, 128)).save(folder / "tall.jpg")
    return folder


def by_name(out_dir):
    data = json.loads((out_dir / "detections.json").read_text())
    return data, {item["output"]: item["detections"] for item in data["images"]}


def test_boxes_are_mapped_back_to_original_pixels(images, tmp_path):
    predictor = OneBoxPredictor()
    out = tmp_path / "out"
    results = predict_images(predictor, [images], out, conf=0.25, iou=0.45,
                             show_progress=False)  # fmt: skip
    assert predictor.shapes == [(1, 3, 64, 64)] * 2
    data, detections = by_name(out)
    assert data["model"] == "stand-in predictor" and len(results) == 2
    # wide 200 x 100: scale 64/200 = 0.32 -> 64 x 32, padded 16 px on top.
    # Input box xyxy (16, 24, 48, 40) -> ((16-0)/.32, (24-16)/.32, 48/.32, (40-16)/.32).
    (wide,) = detections["wide.png"]
    assert wide["class"] == 1 and wide["name"] == "square"
    assert wide["score"] == pytest.approx(0.72, abs=1e-4)  # obj 0.9 x class 0.8
    assert wide["box_xyxy"] == pytest.approx([50, 25, 150, 75], abs=0.01)
    # tall 50 x 100: scale 0.64 -> 32 x 64, padded 16 px at the left.
    # x: (16-16)/.64, (48-16)/.64 = 0, 50; y: 24/.64, 40/.64 = 37.5, 62.5.
    (tall,) = detections["tall.jpg"]
    assert tall["box_xyxy"] == pytest.approx([0, 37.5, 50, 62.5], abs=0.01)


def test_drawn_images_keep_size_and_show_the_class_colour(images, tmp_path):
    out = tmp_path / "out"
    predict_images(OneBoxPredictor(), [images / "wide.png"], out, show_progress=False)
    with Image.open(out / "wide.png") as drawn:
        pixels = np.asarray(drawn.convert("RGB"))
    assert pixels.shape == (100, 200, 3)
    colour = Image.new("RGB", (1, 1), class_color(1)).getpixel((0, 0))
    assert tuple(pixels[50, 50]) == colour  # the left edge of the box (50, 25, 150, 75)
    assert tuple(pixels[50, 100]) == (0, 128, 0)  # inside, untouched
    assert class_color(1) != class_color(0) and class_color(1) == class_color(21)


def test_high_conf_keeps_nothing_and_missing_source_is_named(images, tmp_path):
    out = tmp_path / "out"
    predict_images(OneBoxPredictor(), [images], out, conf=0.9, show_progress=False)
    assert all(not found for found in by_name(out)[1].values())
    with pytest.raises(YoloqError, match="nowhere.png"):
        predict_images(OneBoxPredictor(), [tmp_path / "nowhere.png"], out, show_progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(YoloqError, match="no images in"):
        predict_images(OneBoxPredictor(), [tmp_path / "empty"], out, show_progress=False)


@pytest.fixture
def fake_load_predictor(monkeypatch):
    """`yoloq predict` loads OneBoxPredictor instead of real weights."""
    calls = []

    def load_predictor(weights, device="cpu", backend=None):
        calls.append((str(weights), device))
        return OneBoxPredictor()

    monkeypatch.setattr("yoloq.cli.predict.load_predictor", load_predictor)
    return calls


def test_cli_predict_writes_images_and_json(fake_load_predictor, images, tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(["predict", "--weights", "w.pt", str(images / "wide.png"), str(images / "tall.jpg"),
                 "--out", str(out), "--conf", "0.5"])  # fmt: skip
    assert code == 0
    assert fake_load_predictor == [("w.pt", "cpu")]
    assert sorted(p.name for p in out.iterdir()) == ["detections.json", "tall.jpg", "wide.png"]
    assert by_name(out)[1]["wide.png"][0]["box_xyxy"] == pytest.approx([50, 25, 150, 75], abs=0.01)
    assert "wide.png: square 0.72" in capsys.readouterr().out


def test_cli_predict_missing_source_exits_2(fake_load_predictor, tmp_path, capsys):
    assert main(["predict", "--weights", "w.pt", str(tmp_path / "none.jpg")]) == 2
    assert "none.jpg" in capsys.readouterr().err
