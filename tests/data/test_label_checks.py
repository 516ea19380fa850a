from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import yoloq.data.dataset as dataset_module
from yoloq.data import label_path, load_data_config, load_split
from yoloq.errors import YoloqError


def test_label_path_replaces_the_last_images_folder():
    path = Path("/data/images/coco/images/val/000001.jpg")
    assert label_path(path) == Path("/data/images/coco/labels/val/000001.txt")


def test_good_dataset_loads_with_backgrounds(dataset):
    image_set = load_split(load_data_config(dataset), "val")
    records = {r.path.stem: r for r in image_set.records}
    assert (records["wide"].width, records["wide"].height) == (64, 32)
    np.testing.assert_allclose(records["tall"].labels, [[2, 0.5, 0.4, 0.6, 0.2]], rtol=1e-6)
    assert records["square"].labels.shape == (0, 5)
    assert image_set.backgrounds == 1 and not image_set.problems


BAD_LABELS = {
    "class id out of range": "0 0.5 0.5 0.1 0.1\n3 0.5 0.5 0.1 0.1\n",
    "wrong column count": "0 0.5 0.5 0.1 0.1\n1 0.5 0.5 0.1\n",
    "coordinates outside 0..1": "0 0.5 0.5 0.1 0.1\n1 0.5 1.2 0.1 0.1\n",
    "non-numeric value": "0 0.5 0.5 0.1 0.1\n1 0.5 abc 0.1 0.1\n",
}


@pytest.mark.parametrize("reason", list(BAD_LABELS))
def test_bad_label_error_names_file_and_line(tmp_path, make_dataset, reason):
    data = make_dataset(
        tmp_path, {"good": (20, 20, "0 .5 .5 .2 .2\n"), "bad": (20, 20, BAD_LABELS[reason])}
    )
    with pytest.raises(YoloqError) as error:
        load_split(load_data_config(data), "val", cache=False)
    assert f"{tmp_path / 'labels' / 'val' / 'bad.txt'}:2:" in str(error.value)


def test_skip_mode_counts_every_problem(tmp_path, make_dataset):
    images = {f"bad{i}": (20, 20, text) for i, text in enumerate(BAD_LABELS.values())}
    images["good"] = (20, 20, "0 .5 .5 .2 .2\n0 .5 .5 .2 .2\n")  # a duplicate row
    data = make_dataset(tmp_path, images)
    (tmp_path / "images" / "val" / "broken.png").write_bytes(b"not a png")
    image_set = load_split(load_data_config(data), "val", on_bad_data="skip", cache=False)
    assert [r.path.stem for r in image_set.records] == ["good"]
    assert len(image_set.records[0].labels) == 1 and image_set.duplicate_rows == 1
    assert image_set.dropped_images == 5
    assert image_set.dropped_labels == 4 * 2  # each bad file: one good row + one bad row
    assert image_set.drop_reasons() == {reason: 1 for reason in BAD_LABELS} | {
        "unreadable image": 1
    }


def test_unreadable_image_error_names_it(tmp_path, make_dataset):
    data = make_dataset(tmp_path, {"good": (20, 20, None)})
    (tmp_path / "images" / "val" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(YoloqError, match="broken.png: unreadable image"):
        load_split(load_data_config(data), "val", cache=False)


def test_coordinates_within_tolerance_are_clipped(tmp_path, make_dataset):
    data = make_dataset(tmp_path, {"edge": (20, 20, "0 0.5 0.5 1.0000005 0.2\n")})
    labels = load_split(load_data_config(data), "val", cache=False).records[0].labels
    assert labels[0, 3] == 1.0


def test_label_cache_skips_unchanged_files_and_sees_changes(dataset, monkeypatch):
    config = load_data_config(dataset)
    first = load_split(config, "val")
    assert first.labels_read == 2
    calls = []
    real_reader = dataset_module.read_label_file
    monkeypatch.setattr(
        dataset_module, "read_label_file", lambda p, nc: calls.append(p) or real_reader(p, nc)
    )
    second = load_split(config, "val")
    assert calls == [] and second.labels_read == 0
    assert [r.labels.tolist() for r in second.records] == [r.labels.tolist() for r in first.records]

    changed = dataset.parent / "labels" / "val" / "tall.txt"
    changed.write_text("1 0.5 0.5 0.5 0.5\n0 0.1 0.1 0.1 0.1\n")
    third = load_split(config, "val")
    assert calls == [changed] and third.labels_read == 1
    tall = next(r for r in third.records if r.path.stem == "tall")
    assert tall.labels[:, 0].tolist() == [1, 0]

    (dataset.parent / "labels" / "val" / "square.txt").write_text("5 0.5 0.5 0.5 0.5\n")
    with pytest.raises(YoloqError, match="square.txt:1: class id 5"):
        load_split(config, "val")


def test_cache_is_ignored_when_the_class_count_changes(dataset):
    config = load_data_config(dataset)
    load_split(config, "val")
    assert (
        dataset_module.load_images(config.sources("val"), ["circle", "square"], "skip").labels_read
        == 2
    )
