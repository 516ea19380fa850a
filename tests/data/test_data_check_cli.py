from __future__ import annotations

from yoloq.cli import main


def test_data_check_reports_counts_and_problems(tmp_path, make_dataset, capsys):
    data = make_dataset(
        tmp_path,
        {
            "good": (40, 30, "0 0.5 0.5 0.2 0.2\n2 0.3 0.3 0.1 0.1\n"),
            "empty": (40, 30, None),
            "bad": (40, 30, "0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n"),
        },
    )
    assert main(["data", "check", str(data)]) == 1  # problems found
    out = capsys.readouterr().out
    assert "val: 2 images" in out and "background images" in out
    assert "class id out of range" in out and "bad.txt" in out
    assert "triangle" in out and "40x30" in out


def test_data_check_clean_dataset_and_bad_yaml(dataset, tmp_path, capsys):
    assert main(["data", "check", str(dataset), "--no-cache"]) == 0
    assert main(["data", "check", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: data YAML not found" in capsys.readouterr().err
