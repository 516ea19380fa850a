"""The select and report splits: disjoint, deterministic per seed, as a data YAML names
them, and refused to every step that chooses when they are the report images."""

from __future__ import annotations

import shutil
import warnings

import pytest
import yaml

from yoloq.cli import main
from yoloq.data import load_data_config
from yoloq.data.splits import REPORT, SELECT, load_eval_splits, require_select
from yoloq.errors import YoloqError


def paths(image_set) -> list:
    return [record.path for record in image_set.records]


def seeded(data_yaml, seed):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_eval_splits(load_data_config(data_yaml), seed=seed)
    return splits, [str(w.message) for w in caught]


def test_a_seeded_split_is_disjoint_deterministic_and_says_so(tiny_data):
    first, said = seeded(tiny_data, seed=0)
    again, _ = seeded(tiny_data, seed=0)
    other, _ = seeded(tiny_data, seed=1)
    assert not set(paths(first.select)) & set(paths(first.report))
    assert len(first.select) + len(first.report) == 12 and len(first.select) == 2
    assert paths(first.select) == paths(again.select)
    assert paths(first.select) != paths(other.select)
    assert first.select.role == SELECT and first.report.role == REPORT
    assert first.to_dict() == {"select_images": 2, "report_images": 10,
                               "origin": "seeded split of val", "seed": 0}
    assert any("no 'select:' split" in message and "seed 0" in message for message in said)


def test_the_synthetic_benchmark_names_both_splits_from_other_seeds(tmp_path):
    assert main(["data", "synth", "--out", str(tmp_path), "--images", "2", "--val-images",
                 "3", "--report-images", "4", "--size", "64", "--workers", "1"]) == 0
    data_yaml = tmp_path / "data.yaml"
    raw = yaml.safe_load(data_yaml.read_text())
    assert (raw["select"], raw["val"]) == ("images/val", "images/report")
    splits, said = seeded(data_yaml, seed=0)
    assert (len(splits.select), len(splits.report), splits.origin) == (3, 4, "data YAML")
    assert not said  # named in the YAML: nothing to warn about
    # Other seeds, other images: the report split repeats none of the select split's.
    select_bytes = {p.read_bytes() for p in paths(splits.select)}
    assert not select_bytes & {p.read_bytes() for p in paths(splits.report)}


def test_select_and_val_sharing_images_are_refused(tiny_data, tmp_path):
    shutil.copytree(tiny_data.parent, tmp_path / "data")
    data_yaml = tmp_path / "data" / tiny_data.name
    raw = yaml.safe_load(data_yaml.read_text())
    raw["path"] = str(tmp_path / "data")
    raw["select"] = raw["val"]
    data_yaml.write_text(yaml.safe_dump(raw))
    with pytest.raises(YoloqError, match="share 12 images"):
        load_eval_splits(load_data_config(data_yaml))


def test_a_choice_handed_the_report_split_is_refused(tiny_data):
    splits, _ = seeded(tiny_data, seed=0)
    require_select(splits.select, "the search")  # the select split is what choices see
    with pytest.raises(YoloqError, match="the search chooses, so it must see the select"):
        require_select(splits.report, "the search")


def test_a_workspace_whose_select_loader_is_the_report_split_is_refused(tiny_yolo, tiny_data):
    """What every choice of a workflow measures with (the search, --method auto, QAT's best
    epoch) refuses report images, however the workspace was put together."""
    from dataclasses import replace

    from yoloq.workflows.config import PtqConfig
    from yoloq.workflows.steps import prepare, select_map

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        space = prepare(PtqConfig(weights=str(tiny_yolo), data=str(tiny_data), workers=0,
                                  calib_images=4, batch=4))
    assert select_map(space.float_model, space, "--method auto") >= 0
    crossed = replace(space, select_loader=space.val_loader)
    with pytest.raises(YoloqError, match="--method auto chooses"):
        select_map(crossed.float_model, crossed, "--method auto")
