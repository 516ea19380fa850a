from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from yoloq.data import (
    AugmentConfig,
    create_calibration_loader,
    create_train_loader,
    create_val_loader,
    load_data_config,
    load_split,
    rect_batch_shapes,
)
from yoloq.evaluate import to_original

RED = (255, 0, 0)
# stem: (width, height, red box x1, y1, x2, y2 in original pixels)
IMAGES = {
    "wide": (200, 100, (40, 20, 120, 60)),
    "tall": (100, 300, (10, 150, 50, 270)),
    "square": (120, 120, (60, 0, 100, 30)),
}
# Hand-computed for img_size 160, stride 32, pad 0.5, one image per batch:
# stem: (canvas h, w), (pad left, top), red box in letterboxed pixels.
# wide: scale 0.8 -> 160x80; canvas ceil(80/32+.5)*32=96 x ceil(160/32+.5)*32=192.
# tall: scale 160/300 -> 53x160 (x ratio 0.53); canvas 192 x ceil(53.3/32+.5)*32=96.
# square: scale 4/3 -> 160x160; canvas 192x192.
EXPECTED = {
    "wide": ((96, 192), (16, 8), (48, 24, 112, 56)),
    "tall": ((192, 96), (21, 16), (26.3, 96, 47.5, 160)),
    "square": ((192, 192), (16, 16), (96, 16, 149.3333, 56)),
}


@pytest.fixture
def red_boxes(tmp_path):
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "labels" / "val").mkdir(parents=True)
    for stem, (width, height, (x1, y1, x2, y2)) in IMAGES.items():
        pixels = np.zeros((height, width, 3), np.uint8)
        pixels[y1:y2, x1:x2] = RED
        Image.fromarray(pixels).save(tmp_path / "images" / "val" / f"{stem}.png")
        label = f"1 {(x1 + x2) / 2 / width} {(y1 + y2) / 2 / height} "
        label += f"{(x2 - x1) / width} {(y2 - y1) / height}\n"
        (tmp_path / "labels" / "val" / f"{stem}.txt").write_text(label)
    data = tmp_path / "data.yaml"
    data.write_text("val: images/val\nnames: [a, b]\n")
    return load_split(load_data_config(data), "val")


def test_rect_batch_shapes_follow_yolov7():
    sizes = np.array([[200, 100], [100, 100], [120, 100], [100, 300], [100, 200]], float)
    order = np.argsort(sizes[:, 1] / sizes[:, 0])
    shapes = rect_batch_shapes(sizes[order], batch_size=2, img_size=640, stride=32)
    # batch 0: h/w 0.5, 0.83 -> wide: h = ceil(0.83*20+.5)*32 = 576, w = ceil(20.5)*32 = 672
    # batch 1: 1 and 2 -> mixed: square 672; batch 2: 3 -> tall: w = ceil(6.67+.5)*32 = 256
    assert shapes.tolist() == [[576, 672], [672, 672], [672, 256]]


def test_val_loader_letterbox_and_its_undoing(red_boxes):
    loader = create_val_loader(red_boxes, img_size=160, batch_size=1, stride=32)
    batches = list(loader)
    assert [b.metas[0].path.stem for b in batches] == ["wide", "square", "tall"]  # by h/w
    for batch in batches:
        stem = batch.metas[0].path.stem
        (canvas_h, canvas_w), pad, box = EXPECTED[stem]
        assert batch.images.shape == (1, 3, canvas_h, canvas_w)
        assert batch.images.dtype == torch.float32 and 0 <= batch.images.min() <= 1
        assert batch.metas[0].pad == pad
        # The red pixels sit where the hand computation puts the box (to a pixel).
        red = (batch.images[0, 0] > 0.5) & (batch.images[0, 1] < 0.2)
        ys, xs = red.nonzero(as_tuple=True)
        found = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        np.testing.assert_allclose([float(v) for v in found], box, atol=1.01)
        # Targets: class 1, the hand box normalised to the canvas.
        x1, y1, x2, y2 = box
        expected = [0, 1, (x1 + x2) / 2 / canvas_w, (y1 + y2) / 2 / canvas_h]
        expected += [(x2 - x1) / canvas_w, (y2 - y1) / canvas_h]
        np.testing.assert_allclose(batch.targets[0].tolist(), expected, atol=1e-5)
        # Undoing letterbox and rect padding gives the original box back.
        back = to_original(torch.tensor([box], dtype=torch.float64), batch.metas[0])
        np.testing.assert_allclose(back[0].tolist(), IMAGES[stem][2], atol=1e-3)


def test_to_original_clips_to_the_image(red_boxes):
    meta = next(iter(create_val_loader(red_boxes, 160, 1, 32))).metas[0]  # wide, 200x100
    back = to_original(torch.tensor([[0.0, 0.0, 500.0, 90.0]]), meta)
    assert back[0].tolist() == [0.0, 0.0, 200.0, 100.0]


def test_val_batches_share_a_shape_and_work_in_workers(red_boxes):
    loader = create_val_loader(red_boxes, img_size=160, batch_size=2, stride=32, workers=1)
    shapes = [tuple(b.images.shape) for b in loader]
    assert shapes == [(2, 3, 192, 192), (1, 3, 192, 96)]  # wide+square padded square
    assert [len(b.metas) for b in loader] == [2, 1]


def test_calibration_sampler_is_seeded(red_boxes):
    def stems(seed, n=2):
        loader = create_calibration_loader(red_boxes, n, img_size=64, batch_size=4, seed=seed)
        batches = list(loader)
        assert all(b.images.shape[2:] == (64, 64) for b in batches)
        return [m.path.stem for b in batches for m in b.metas]

    assert stems(0) == stems(0)
    assert len(set(stems(0, 10))) == 3  # no image twice, capped at the set size
    assert {tuple(stems(s)) for s in range(6)} != {tuple(stems(0))}


def test_train_loader_is_seeded_and_keeps_boxes_valid(red_boxes):
    def run(seed):
        loader = create_train_loader(
            red_boxes, 96, batch_size=3, seed=seed, augment=AugmentConfig()
        )
        return next(iter(loader))

    first, again, other = run(3), run(3), run(4)
    assert torch.equal(first.images, again.images) and torch.equal(first.targets, again.targets)
    assert not torch.equal(first.images, other.images)
    assert first.images.shape == (3, 3, 96, 96)
    assert ((first.targets[:, 2:] >= 0) & (first.targets[:, 2:] <= 1)).all()
    # Without scale jitter or colour change, a flipped red box stays exactly on its label.
    plain = AugmentConfig(scale=0, hsv_h=0, hsv_s=0, hsv_v=0, flip_lr=1.0)
    batch = next(iter(create_train_loader(red_boxes, 96, 1, augment=plain)))
    _, cls, x, y, w, h = batch.targets[0].tolist()
    red = ((batch.images[0, 0] > 0.5) & (batch.images[0, 1] < 0.2)).nonzero().float()
    centre = (red.min(0).values + red.max(0).values + 1) / 2 / 96  # (y, x)
    np.testing.assert_allclose(centre.tolist(), [y, x], atol=1.5 / 96)
