"""Bad input through every subcommand that reads files: one clear line on stderr that
names the file and what is wrong with it, exit status 2, no traceback, and nothing left
behind that looks like a finished output.

Every case runs the CLI in this process (`main([...])`) on tiny files made here, beside
the tiny model and data of tests/conftest.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml

from yoloq.cli import main
from yoloq.data.synthetic import CLASS_NAMES


def random_bytes(count: int, seed: int = 0) -> bytes:
    """Bytes that are neither a zip archive nor a pickle, nor an ONNX protobuf."""
    data = np.random.default_rng(seed).integers(0, 256, count, dtype=np.uint8).tobytes()
    assert data[:2] != b"PK" and data[0] != 0x80
    return data


def data_variant(root: Path, tiny_data: Path, name: str, val_labels: dict | None = None,
                 val_files: dict | None = None, **yaml_changes) -> Path:
    """A data YAML whose train split is tiny_data's and whose val split is two copied
    images, with `val_labels` / `val_files` ({stem: text}) written over theirs."""
    folder = root / name
    images, labels = folder / "images" / "val", folder / "labels" / "val"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for source in sorted((tiny_data.parent / "images" / "val").iterdir())[:2]:
        shutil.copy(source, images / source.name)
    for stem, text in (val_labels or {}).items():
        (labels / f"{stem}.txt").write_text(text)
    for stem, text in (val_files or {}).items():
        (images / f"{stem}.jpg").write_text(text)
    settings = {"train": str(tiny_data.parent / "images" / "train"), "val": str(images),
                "nc": len(CLASS_NAMES), "names": list(CLASS_NAMES)}
    for key, value in yaml_changes.items():
        settings.pop(key) if value is None else settings.__setitem__(key, value)
    path = folder / "data.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_yolo, tiny_data, conv_onnx) -> dict[str, Path]:
    """Every bad file of the table below, by the name the table uses."""
    root = tmp_path_factory.mktemp("bad_input")
    good_pt, good_onnx = tiny_yolo.read_bytes(), conv_onnx.read_bytes()
    made = {"data": tiny_data, "float_pt": tiny_yolo,
            "val_images": tiny_data.parent / "images" / "val"}
    for suffix, good in ((".pt", good_pt), (".onnx", good_onnx), (".engine", None)):
        contents = {"empty": b"", "random": random_bytes(4096)}
        contents["trunc"] = (good or contents["random"])[: len(good or contents["random"]) // 2]
        for kind, content in contents.items():
            made[f"{kind}_{suffix[1:]}"] = root / f"{kind}{suffix}"
            made[f"{kind}_{suffix[1:]}"].write_bytes(content)
    # Engines: the empty one and the truncated one with a sidecar JSON that yoloq wrote
    # (readable), the random one with a torn sidecar.
    for kind in ("empty", "trunc"):
        (root / f"{kind}.engine.json").write_text(
            json.dumps({"names": list(CLASS_NAMES), "img_size": 128}))
    made["random_engine_json"] = root / "random.engine.json"
    made["random_engine_json"].write_text('{"names": ["ellipse", ')
    made["bad_yaml"] = root / "bad.yaml"
    made["bad_yaml"].write_text("train: [images/train\nval: images/val\n")
    made["binary_txt"] = root / "binary.txt"
    made["binary_txt"].write_bytes(random_bytes(64, seed=1))
    made["not_image_jpg"] = root / "not_image.jpg"
    made["not_image_jpg"].write_text("this is not an image")
    made["folder"] = root / "a_folder"
    made["folder"].mkdir()
    made["ptq_pt"] = _ptq_like(root / "ptq.pt")
    variants = {
        "no_names": {"names": None, "nc": None},
        "no_splits": {"train": None, "val": None},
        "no_val": {"val": None},
        "missing_val": {"val": str(root / "nowhere")},
        "not_image": {"val_files": {"000000": "not an image"}},
        "nan_label": {"val_labels": {"000000": "0 nan 0.5 0.1 0.1\n"}},
        "negative_label": {"val_labels": {"000000": "0 -0.2 0.5 0.1 0.1\n"}},
        "outside_label": {"val_labels": {"000000": "0 0.5 1.5 0.1 0.1\n"}},
        "unknown_class": {"val_labels": {"000000": "9 0.5 0.5 0.1 0.1\n"}},
        "all_bad": {"val_files": {"000000": "x", "000001": "x"}},
    }
    for name, changes in variants.items():
        made[name] = data_variant(root, tiny_data, name, **changes)
    made["empty_val"] = data_variant(root, tiny_data, "empty_val")
    for image in (made["empty_val"].parent / "images" / "val").iterdir():
        image.unlink()
    return made


def _ptq_like(path: Path) -> Path:
    """A readable yoloq checkpoint of the wrong kind (float, not quantized) for --ptq."""
    torch.save({"format": "yoloq-float", "version": 1}, path)
    return path


WORK = "--workers 0"
# (id, command line, what the message must say, the file it must name). {out} is a fresh
# output path; {taken} a file already where an output folder should go.
CASES = [
    # Checkpoints: empty, truncated, random bytes, through every command that loads them.
    *[(f"{command}-{kind}-pt", line.replace("{w}", f"{{{kind}_pt}}"), says, f"{kind}_pt")
      for kind, says in (("empty", "empty file"), ("trunc", "corrupt or truncated checkpoint"),
                         ("random", "not a PyTorch checkpoint"))
      for command, line in (
          ("eval", f"eval --weights {{w}} --data {{data}} {WORK}"),
          ("export", "export --weights {w} --float --out {out}/x.onnx"),
          ("ptq", f"ptq --weights {{w}} --data {{data}} --out {{out}} {WORK}"),
          ("qat", f"qat --weights {{w}} --data {{data}} --out {{out}} {WORK}"),
          ("sensitivity", f"sensitivity --weights {{w}} --data {{data}} --out {{out}} {WORK}"),
          ("rules", "rules {w}"),
          ("predict", "predict --weights {w} {val_images} --out {out}"),
      )],
    *[(f"qat-ptq-{kind}", f"qat --weights {{float_pt}} --data {{data}} --ptq {{{kind}_pt}} "
       f"--out {{out}} {WORK}", says, f"{kind}_pt")
      for kind, says in (("empty", "empty file"), ("trunc", "corrupt or truncated"),
                         ("random", "not a PyTorch checkpoint"))],
    ("qat-ptq-float", f"qat --weights {{float_pt}} --data {{data}} --ptq {{ptq_pt}} --out {{out}} "
     f"{WORK}", "not a yoloq-quantized checkpoint but a yoloq-float one", "ptq_pt"),
    ("sensitivity-ptq-trunc", f"sensitivity --weights {{float_pt}} --data {{data}} --ptq "
     f"{{trunc_pt}} --out {{out}} {WORK}", "not a yoloq quantized checkpoint", "trunc_pt"),
    # ONNX models: empty, truncated, random bytes.
    *[(f"{command}-{kind}-onnx", line.replace("{m}", f"{{{kind}_onnx}}"), says, f"{kind}_onnx")
      for kind, says in (("empty", "empty file"), ("trunc", "cannot read as ONNX"),
                         ("random", "cannot read as ONNX"))
      for command, line in (
          ("eval", f"eval --weights {{m}} --data {{data}} {WORK}"),
          ("lint", "lint {m}"),
          ("predict", "predict --weights {m} {val_images} --out {out}"),
          ("export", "export --weights {m} --out {out}/x.onnx"),
      )],
    *[(f"bench-{kind}-onnx", f"bench {{{kind}_onnx}} --json {{out}}/b.json",
       "ONNX Runtime cannot load it", f"{kind}_onnx") for kind in ("empty", "trunc", "random")],
    # Engines (TensorRT is made absent: no engine can be judged without it).
    ("eval-empty-engine", f"eval --weights {{empty_engine}} --data {{data}} {WORK}",
     "empty file, not a TensorRT engine", "empty_engine"),
    ("eval-trunc-engine", f"eval --weights {{trunc_engine}} --data {{data}} {WORK}",
     "cannot run it here: TensorRT is not installed", "trunc_engine"),
    ("eval-random-engine", f"eval --weights {{random_engine}} --data {{data}} {WORK}",
     "not readable JSON", "random_engine_json"),
    ("bench-empty-engine", "bench {empty_engine}", "TensorRT is not installed", None),
    ("trt-draw-random", "trt draw --layers {random_engine} --out {out}/e.svg", "not JSON",
     "random_engine"),
    ("trt-draw-torn-json", "trt draw --layers {random_engine_json} --out {out}/e.svg",
     "not JSON", "random_engine_json"),
    # Data: the YAML, the images, the labels, the splits.
    *[(f"{command}-{variant}", line.replace("{d}", f"{{{variant}}}"), says, file)
      for variant, says, file in (
          ("no_names", "needs 'names'", "no_names"),
          ("no_splits", "no 'train' or 'val' entry", "no_splits"),
          ("no_val", "no 'val' split", "no_val"),
          ("missing_val", "image source", "missing_val"),
          ("bad_yaml", "not a readable YAML file", "bad_yaml"),
          ("not_image", "unreadable image", "not_image"),
          ("nan_label", "non-finite value", "nan_label"),
          ("negative_label", "coordinates outside 0..1", "negative_label"),
          ("outside_label", "coordinates outside 0..1", "outside_label"),
          ("unknown_class", "class id 9 not in 0..7", "unknown_class"),
          ("empty_val", "no images found", "empty_val"))
      for command, line in (
          ("eval", f"eval --weights {{float_pt}} --data {{d}} {WORK}"),
          ("ptq", f"ptq --weights {{float_pt}} --data {{d}} --out {{out}} {WORK}"),
      )],
    *[(f"{command}-all-images-skipped", line, "no images to evaluate on: skipped 2 images",
       "all_bad")
      for command, line in (
          ("eval", f"eval --weights {{float_pt}} --data {{all_bad}} --on-bad-data skip {WORK}"),
          ("ptq", f"ptq --weights {{float_pt}} --data {{all_bad}} --on-bad-data skip "
                  f"--out {{out}} {WORK}"))],
    ("qat-unknown-class", f"qat --weights {{float_pt}} --data {{unknown_class}} --out {{out}} "
     f"{WORK}", "class id 9 not in 0..7", "unknown_class"),
    ("sensitivity-nan-label", f"sensitivity --weights {{float_pt}} --data {{nan_label}} "
     f"--out {{out}} {WORK}", "non-finite value", "nan_label"),
    ("data-check-no-names", "data check {no_names}", "needs 'names'", "no_names"),
    ("data-check-bad-yaml", "data check {bad_yaml}", "not a readable YAML file", "bad_yaml"),
    ("predict-not-an-image", "predict --weights {float_pt} {not_image_jpg} --out {out}",
     "unreadable image", "not_image_jpg"),
    ("predict-binary-list", "predict --weights {float_pt} {binary_txt} --out {out}",
     "cannot read the image list", "binary_txt"),
    # Settings files.
    ("ptq-bad-config", "ptq --config {bad_yaml} --out {out}", "not a readable config",
     "bad_yaml"),
    ("ptq-binary-ignore-file", f"ptq --weights {{float_pt}} --data {{data}} --ignore-file "
     f"{{binary_txt}} --out {{out}} {WORK}", "not a text file of ignore regexes", "binary_txt"),
    ("qat-binary-ignore-file", f"qat --weights {{float_pt}} --data {{data}} --ignore-file "
     f"{{binary_txt}} --out {{out}} {WORK}", "not a text file of ignore regexes", "binary_txt"),
    ("qat-resume-no-run", "qat --resume {folder}", "config not found", "folder"),
    # Outputs in the way.
    *[(f"{command}-out-is-a-file", line, "is a file, not a folder", "taken")
      for command, line in (
          ("ptq", f"ptq --weights {{float_pt}} --data {{data}} --out {{taken}} {WORK}"),
          ("qat", f"qat --weights {{float_pt}} --data {{data}} --out {{taken}} {WORK}"),
          ("sensitivity", f"sensitivity --weights {{float_pt}} --data {{data}} --out {{taken}} "
                          f"{WORK}"),
          ("predict", "predict --weights {float_pt} {val_images} --out {taken}"),
          ("demo", "demo --out {taken}"))],
    ("export-out-is-a-folder", "export --weights {float_pt} --float --out {folder}",
     "is a folder", "folder"),
    ("eval-out-is-a-folder", f"eval --weights {{float_pt}} --data {{data}} --out {{folder}} "
     f"{WORK}", "is a folder", "folder"),
]


@pytest.mark.parametrize(("argv", "says", "names"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_bad_input_fails_in_one_clear_line(argv, says, names, files, tmp_path, capsys,
                                           no_tensorrt):
    out, taken = tmp_path / "out", tmp_path / "taken"
    taken.write_text("mine")
    paths = {**files, "out": out, "taken": taken}
    assert main([part.format_map(paths) for part in argv.split()]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    print(lines)  # the messages, for `pytest -s`
    assert "Traceback" not in captured.out + captured.err
    assert len(lines) == 1 and lines[0].startswith("yoloq: error: ")
    assert says in lines[0]
    if names is not None:
        named = paths[names]
        # A data YAML's problem may be in a file it names: the image or label under it.
        named = named.parent if named.name == "data.yaml" else named
        assert str(named) in lines[0]
    # Nothing written that looks finished: no output folder, no temporary left over.
    assert not out.exists() and taken.read_text() == "mine"
    root = files["float_pt"].parents[1]
    assert not [p for p in root.rglob("*") if p.suffix == ".tmp" or ".tmp." in p.name]


# --- interrupted writes leave the old file or none, never a torn or half-made one ----------


def test_an_export_that_fails_late_leaves_no_onnx_behind(tmp_path, monkeypatch):
    from yoloq.export.detector import export_detector, read_metadata

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)).eval()
    path = tmp_path / "model.onnx"
    export_detector(model, path, 64, metadata={"names": "[]", "run": "first"})

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx, "save", disk_full)  # after the graph, when the metadata goes in
    with pytest.raises(OSError, match="No space left"):
        export_detector(model, path, 64, metadata={"names": "[]", "run": "second"})
    assert read_metadata(path)["run"] == "first"  # the earlier export, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_a_checkpoint_or_report_write_that_fails_leaves_the_old_file(tmp_path, monkeypatch):
    from yoloq.files import write_text_atomic
    from yoloq.models.native import atomic_torch_save

    checkpoint, report = tmp_path / "ptq.pt", tmp_path / "report.json"
    atomic_torch_save({"run": 1}, checkpoint)
    write_text_atomic(report, '{"run": 1}')

    def torn_save(payload, file):  # half a checkpoint, then the disk fills up
        Path(file).write_bytes(b"PK\x03\x04half")
        raise OSError(28, "No space left on device")

    real_write_text = Path.write_text

    def torn_write_text(self, text, *args, **kwargs):  # half the text, then the disk is full
        real_write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError):
        atomic_torch_save({"run": 2}, checkpoint)
    monkeypatch.setattr(Path, "write_text", torn_write_text)
    with pytest.raises(OSError):
        write_text_atomic(report, '{"run": 2}')
    monkeypatch.undo()
    assert torch.load(checkpoint, weights_only=True) == {"run": 1}
    assert report.read_text() == '{"run": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ptq.pt", "report.json"]
