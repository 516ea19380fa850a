from __future__ import annotations

import pytest

from yoloq.data import list_images, load_data_config
from yoloq.errors import YoloqError


def test_sources_resolve_against_path_and_names_dict(tmp_path):
    root = tmp_path / "sets" / "mine"
    (root / "images" / "a").mkdir(parents=True)
    (root / "images" / "b").mkdir(parents=True)
    for folder in ("a", "b"):
        (root / "images" / folder / f"{folder}.jpg").write_bytes(b"")
    (root / "list.txt").write_text("./images/a/a.jpg\n\n")
    data = tmp_path / "data.yaml"
    data.write_text(
        "path: sets/mine\ntrain: [images/a, images/b]\nval: list.txt\nnames: {0: cat, 1: dog}\n"
    )
    config = load_data_config(data)
    assert config.names == ("cat", "dog") and config.nc == 2
    assert [p.name for p in list_images(config.sources("train"))] == ["a.jpg", "b.jpg"]
    assert list_images(config.sources("val")) == [(root / "images/a/a.jpg").resolve()]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("val: nowhere\nnames: [a]\n", "not found"),
        ("val: .\nnc: 2\nnames: [a]\n", "nc=2 but 1 names"),
        ("names: [a]\n", "no 'train' or 'val'"),
        ("val: .\nnames: {0: a, 2: b}\n", "keys must be"),
    ],
)
def test_bad_yaml_names_the_file(tmp_path, text, message):
    data = tmp_path / "bad.yaml"
    data.write_text(text)
    with pytest.raises(YoloqError, match=message) as error:
        load_data_config(data)
    assert "bad.yaml" in str(error.value)


def test_missing_split_is_an_error(dataset):
    with pytest.raises(YoloqError, match="no 'train' split"):
        load_data_config(dataset).sources("train")
