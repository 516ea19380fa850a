"""The synthetic benchmark: deterministic, labels that match what was drawn, a valid
YOLO layout, and a cache that is reused only when it is complete and current."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from yoloq.data.synthetic import (
    CLASS_NAMES,
    MANIFEST_NAME,
    MIN_VISIBLE_FRACTION,
    SyntheticConfig,
    ensure_dataset,
    generate_dataset,
    generate_image,
    image_rng,
    render_scene,
)
from yoloq.errors import YoloqError

SMALL = {"train_images": 6, "val_images": 4, "size": 96, "progress": False}


def _files(root: Path) -> dict[str, bytes]:
    """Every image and label file under root, by relative path."""
    paths = sorted(p for d in ("images", "labels") for p in (root / d).rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in paths}


def _mask_box(obj) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(obj.mask.any(axis=1)), np.flatnonzero(obj.mask.any(axis=0))
    x0, y0 = obj.origin
    return x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1


@pytest.fixture(scope="module")
def scenes():
    return [render_scene(image_rng(0, "train", i), 320) for i in range(40)]


def test_same_seed_gives_same_bytes_with_one_or_two_workers(tmp_path):
    generate_dataset(tmp_path / "a", seed=3, workers=1, **SMALL)
    generate_dataset(tmp_path / "b", seed=3, workers=2, **SMALL)
    generate_dataset(tmp_path / "c", seed=4, workers=2, **SMALL)
    a, b, c = (_files(tmp_path / name) for name in "abc")
    assert len(a) == 2 * (6 + 4)
    assert a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a if k.startswith("images"))


def test_boxes_are_the_tight_boxes_of_the_drawn_masks(scenes):
    inside = 0
    for scene in scenes:
        for obj in scene.objects:
            assert obj.box == _mask_box(obj)
            # Independent of the rasteriser: the polygon's extent.
            lo, hi = obj.outline.min(axis=0), obj.outline.max(axis=0)
            box_lo, box_hi = np.array(obj.box[:2]), np.array(obj.box[2:])
            if lo.min() >= 0 and hi.max() <= 319:
                # The pixel box covers the polygon, with less than a pixel to spare.
                assert np.all((lo - 1 <= box_lo) & (box_lo <= lo) & (hi <= box_hi))
                assert np.all(box_hi <= hi + 1)
                inside += 1
            else:  # cut by the border: inside the polygon's extent, ending at the border
                assert np.all((np.floor(lo) <= box_lo) & (box_hi <= np.ceil(hi) + 1))
                assert np.all(box_lo[lo < 0] == 0) and np.all(box_hi[hi > 319] == 320)
    assert inside > 100


def test_labelled_objects_are_visible_and_of_known_classes(scenes):
    objects = [obj for scene in scenes for obj in scene.objects]
    assert {obj.cls for obj in objects} == set(range(len(CLASS_NAMES)))
    assert all(MIN_VISIBLE_FRACTION <= obj.visible_fraction <= 1 for obj in objects)
    assert sum(obj.visible_fraction < 0.9 for obj in objects) > 10  # occlusion happens
    assert 2 <= np.mean([len(scene.objects) for scene in scenes]) <= 12


def test_object_sizes_span_small_to_large(scenes):
    sides = [max(x1 - x0, y1 - y0) for s in scenes for _, (x0, y0, x1, y1) in _boxes(s)]
    assert min(sides) < 16 and max(sides) > 100


def _boxes(scene):
    return [(obj.cls, obj.box) for obj in scene.objects]


def test_generate_image_is_deterministic_per_stream():
    image_a, boxes_a = generate_image(image_rng(0, "val", 5), 128)
    image_b, boxes_b = generate_image(image_rng(0, "val", 5), 128)
    image_c, _ = generate_image(image_rng(0, "train", 5), 128)
    assert image_a.size == (128, 128) and image_a.mode == "RGB"
    assert boxes_a == boxes_b and image_a.tobytes() == image_b.tobytes()
    assert image_a.tobytes() != image_c.tobytes()


def test_label_files_round_trip_to_the_drawn_boxes(tmp_path):
    generate_dataset(tmp_path, seed=1, workers=1, **SMALL)
    for split, count in (("train", 6), ("val", 4)):
        for index in range(count):
            _, boxes = generate_image(image_rng(1, split, index), 96)
            lines = (tmp_path / "labels" / split / f"{index:06d}.txt").read_text().splitlines()
            assert [len(line.split()) for line in lines] == [5] * len(boxes)
            read = np.array([[float(v) for v in line.split()] for line in lines]).reshape(-1, 5)
            cls, x0, y0, x1, y1 = np.array(boxes, float).reshape(-1, 5).T
            expected = np.stack([cls, (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=1)
            expected[:, 1:] /= 96
            assert np.allclose(read, expected, atol=1e-6)
            with Image.open(tmp_path / "images" / split / f"{index:06d}.jpg") as image:
                assert image.size == (96, 96) and image.mode == "RGB"


def test_data_yaml_points_to_the_folders(tmp_path):
    data_yaml = generate_dataset(tmp_path / "set", workers=1, **SMALL)
    data = yaml.safe_load(data_yaml.read_text())
    assert data["nc"] == len(data["names"]) == len(CLASS_NAMES)
    root = Path(data["path"])
    assert root.is_absolute() and root == (tmp_path / "set").resolve()
    for split, count in (("train", 6), ("val", 4)):
        images = sorted((root / data[split]).glob("*.jpg"))
        assert len(images) == count
        labels = root / data[split].replace("images", "labels")
        assert [p.stem for p in images] == sorted(p.stem for p in labels.glob("*.txt"))


def _age(root: Path) -> dict[str, int]:
    """Set every file's mtime to the epoch; return them, to see later which were rewritten."""
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(0, 0))
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_ensure_dataset_reuses_a_complete_set(tmp_path):
    data_yaml = ensure_dataset(tmp_path, workers=1, **SMALL)
    before = _age(tmp_path)
    assert ensure_dataset(tmp_path, workers=2, **SMALL) == data_yaml
    assert _mtimes(tmp_path) == before


def test_ensure_dataset_regenerates_when_parameters_change(tmp_path):
    ensure_dataset(tmp_path, workers=1, **SMALL)
    old = _files(tmp_path)
    ensure_dataset(tmp_path, workers=1, **{**SMALL, "seed": 9, "train_images": 3})
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest["seed"] == 9 and manifest["train_images"] == 3 and manifest["complete"]
    new = _files(tmp_path)
    assert len(new) == 2 * (3 + 4)  # no stale files from the larger set
    assert new["images/val/000000.jpg"] != old["images/val/000000.jpg"]


@pytest.mark.parametrize("damage", ["incomplete", "missing"])
def test_ensure_dataset_redoes_an_interrupted_set(tmp_path, damage):
    ensure_dataset(tmp_path, workers=1, **SMALL)
    manifest_path = tmp_path / MANIFEST_NAME
    if damage == "missing":
        # Without a manifest the folder is not known to be ours: refuse to touch it.
        manifest_path.unlink()
        with pytest.raises(YoloqError, match=MANIFEST_NAME):
            ensure_dataset(tmp_path, workers=1, **SMALL)
        return
    manifest_path.write_text(
        json.dumps({**json.loads(manifest_path.read_text()), "complete": False})
    )
    before = _age(tmp_path)
    ensure_dataset(tmp_path, workers=1, **SMALL)
    after = _mtimes(tmp_path)
    assert all(after[path] != 0 for path in before if "data.yaml" not in path)
    assert json.loads(manifest_path.read_text())["complete"]


def test_generate_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(YoloqError):
        generate_dataset(tmp_path, workers=1, **SMALL)
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("bad", [{"size": 32}, {"train_images": -1}, {"seed": -1}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        SyntheticConfig(**bad)
