"""The data YAML, as YOLO's `coco.yaml` writes it: `path`, `train`, `val`, `nc`, `names`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from yoloq.data.demo import DEMO, demo_data
from yoloq.errors import YoloqError

# `select`: images that choices are made on (a method, a layer to keep float, an epoch),
# held apart from `val`, which every reported number is measured on.
SPLITS = ("train", "val", "select", "test")


@dataclass(frozen=True)
class DataConfig:
    """A dataset description: image sources per split and the class names.

    Each split holds the sources named in the YAML, resolved to absolute paths: an
    image folder, or a text file listing image paths, or several of those.
    """

    file: Path
    names: tuple[str, ...]
    splits: dict[str, tuple[Path, ...]]

    @property
    def nc(self) -> int:
        return len(self.names)

    def sources(self, split: str) -> tuple[Path, ...]:
        """The image sources of `split`, or an error naming the YAML if it has none."""
        if split not in self.splits:
            raise YoloqError(f"{self.file}: no '{split}' split (has: {', '.join(self.splits)})")
        return self.splits[split]


def load_data_config(path: str | Path) -> DataConfig:
    """Read a data YAML.

    Relative paths are resolved against `path:` (itself relative to the YAML's folder)
    or, without it, against the YAML's folder, so a dataset can be moved as a whole.
    `"demo"` names the built-in synthetic benchmark (generated on first use).
    """
    if str(path) == DEMO:
        path = demo_data()
    file = Path(path)
    if not file.is_file():
        raise YoloqError(f"{file}: data YAML not found")
    try:
        raw = yaml.safe_load(file.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise YoloqError(f"{file}: not a readable YAML file ({yaml_error_line(error)})") from None
    if not isinstance(raw, dict):
        raise YoloqError(f"{file}: expected a mapping with 'train', 'val', 'names'")
    root = _root(file, raw.get("path"))
    names = _names(file, raw)
    splits = {
        split: _sources(file, root, raw[split])
        for split in SPLITS
        if raw.get(split) not in (None, "", [])
    }
    if not splits:
        raise YoloqError(f"{file}: no 'train' or 'val' entry")
    return DataConfig(file=file.resolve(), names=names, splits=splits)


def yaml_error_line(error: Exception) -> str:
    """A YAML (or decoding) error in one line: PyYAML's own message spans several, with
    an excerpt of the file under it."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(error).split())


def _root(file: Path, path_entry) -> Path:
    base = file.resolve().parent
    if path_entry in (None, ""):
        return base
    return (base / Path(str(path_entry)).expanduser()).resolve()


def _names(file: Path, raw: dict) -> tuple[str, ...]:
    names = raw.get("names")
    if isinstance(names, dict):
        # YOLOv5/v8 style {0: person, 1: bicycle}: the keys must be 0..n-1.
        if sorted(names) != list(range(len(names))):
            raise YoloqError(f"{file}: 'names' keys must be 0..{len(names) - 1}")
        names = [names[i] for i in range(len(names))]
    nc = raw.get("nc")
    if names is None:
        if not isinstance(nc, int) or nc <= 0:
            raise YoloqError(f"{file}: needs 'names' (or at least a positive 'nc')")
        names = [f"class{i}" for i in range(nc)]
    if not isinstance(names, list) or not names:
        raise YoloqError(f"{file}: 'names' must be a non-empty list or dict")
    if nc is not None and nc != len(names):
        raise YoloqError(f"{file}: nc={nc} but {len(names)} names")
    return tuple(str(name) for name in names)


def _sources(file: Path, root: Path, entry) -> tuple[Path, ...]:
    entries = entry if isinstance(entry, list) else [entry]
    sources = []
    for item in entries:
        source = (root / Path(str(item)).expanduser()).resolve()
        if not source.exists():
            raise YoloqError(f"{file}: image source '{item}' not found (looked for {source})")
        sources.append(source)
    return tuple(sources)
