"""Images and YOLO labels of one split: discovery, reading, validation and the label cache.

A label file `.../labels/x.txt` sits beside `.../images/x.jpg` and holds one object
per line, `class x_center y_center width height`, coordinates normalised to 0..1.
A missing label file means an image without objects (background), not an error.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from yoloq.data.config import DataConfig
from yoloq.errors import YoloqError

IMAGE_SUFFIXES = frozenset({".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".dng"})
# Normalised coordinates may exceed 0..1 by rounding in the tool that wrote them.
COORD_TOLERANCE = 1e-6
CACHE_VERSION = 1
BAD_DATA_MODES = ("error", "skip")
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class DataProblem:
    """One problem in the data: the file, the line (1-based, labels only) and why."""

    path: Path
    line: int | None
    reason: str  # a short category used for counting, e.g. "class id out of range"
    detail: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        return f"{where}: {self.detail}"


@dataclass(frozen=True)
class ImageRecord:
    """One checked image: its size after EXIF rotation and its labels [n, 5] (cls, xywh 0..1)."""

    path: Path
    width: int
    height: int
    labels: np.ndarray


@dataclass
class ImageSet:
    """The images of one split that passed the checks, and what was dropped and why."""

    records: list[ImageRecord]
    names: tuple[str, ...]
    problems: list[DataProblem] = field(default_factory=list)
    warnings: list[DataProblem] = field(default_factory=list)
    dropped_images: int = 0
    dropped_labels: int = 0  # label rows of dropped images (not read for unreadable images)
    duplicate_rows: int = 0
    backgrounds: int = 0
    labels_read: int = 0  # label files parsed in this run; the rest came from the cache
    sources: tuple[Path, ...] = ()  # the folders / list files read, for error messages
    role: str | None = None  # "select" or "report" (yoloq.data.splits), None otherwise

    def __len__(self) -> int:
        return len(self.records)

    @property
    def nc(self) -> int:
        return len(self.names)

    def drop_reasons(self) -> Counter:
        """How many problems of each kind were found (each drops its image)."""
        return Counter(problem.reason for problem in self.problems)

    def drop_summary(self) -> str:
        """One line saying what skip mode dropped and why ('' when nothing was dropped)."""
        if not self.dropped_images:
            return ""
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.drop_reasons().items()))
        return (
            f"skipped {self.dropped_images} images and {self.dropped_labels} labels ({reasons}); "
            "run `yoloq data check` for the list"
        )


def list_images(sources: Sequence[str | Path]) -> list[Path]:
    """All image paths of `sources`: folders (searched recursively) and list files.

    A list file holds one image path per line; relative lines are relative to the
    list file's folder, as in YOLO's `train2017.txt`.
    """
    images: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            found = (p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            images.extend(sorted(found))
        elif source.is_file() and source.suffix.lower() in IMAGE_SUFFIXES:
            images.append(source)
        elif source.is_file():
            images.extend(_read_list_file(source))
        else:
            raise YoloqError(f"{source}: image source not found")
    return [path.resolve() for path in images]


def _read_list_file(path: Path) -> list[Path]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise YoloqError(f"{path}: cannot read the image list ({error})") from None
    images = []
    for line in lines:
        line = line.strip()
        if line:
            image = Path(line)
            images.append(image if image.is_absolute() else path.parent / image)
    return images


def label_path(image: str | Path) -> Path:
    """The label file of an image: the last `/images/` becomes `/labels/`, suffix `.txt`."""
    text = str(Path(image))
    marker = f"{os.sep}images{os.sep}"
    head, found, tail = text.rpartition(marker)
    if found:
        text = f"{head}{os.sep}labels{os.sep}{tail}"
    return Path(text).with_suffix(".txt")


def parse_labels(text: str, path: Path, nc: int) -> tuple[np.ndarray, list[DataProblem], int]:
    """Parse the text of a label file: (labels [n, 5] float64, problems, duplicate rows).

    Duplicate rows are dropped and counted, not problems: they do not change what is
    in the image. Coordinates within `COORD_TOLERANCE` outside 0..1 are clipped.
    """
    rows, problems = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        row, problem = _parse_row(line, path, number, nc)
        if problem:
            problems.append(problem)
        else:
            rows.append(row)
    labels = np.array(rows, dtype=np.float64).reshape(-1, 5)
    labels[:, 1:] = labels[:, 1:].clip(0.0, 1.0)
    unique, first = np.unique(labels, axis=0, return_index=True)
    duplicates = len(labels) - len(unique)
    return labels[np.sort(first)], problems, duplicates


def _parse_row(line: str, path: Path, number: int, nc: int):
    def problem(reason: str, detail: str):
        return None, DataProblem(path, number, reason, detail)

    columns = line.split()
    if len(columns) != 5:
        return problem("wrong column count", f"expected 5 columns, found {len(columns)}")
    try:
        values = [float(column) for column in columns]
    except ValueError:
        return problem("non-numeric value", f"non-numeric value in '{line.strip()}'")
    if not all(np.isfinite(values)):
        return problem("non-numeric value", f"non-finite value in '{line.strip()}'")
    cls = values[0]
    if cls != int(cls) or not 0 <= cls < nc:
        return problem("class id out of range", f"class id {columns[0]} not in 0..{nc - 1}")
    coords = np.array(values[1:])
    if (coords < -COORD_TOLERANCE).any() or (coords > 1 + COORD_TOLERANCE).any():
        return problem("coordinates outside 0..1", f"coordinates outside 0..1 in '{line.strip()}'")
    if (coords[2:] <= 0).any():
        return problem("empty box", f"box width or height is 0 in '{line.strip()}'")
    return values, None


def read_label_file(path: Path, nc: int) -> tuple[np.ndarray, list[DataProblem], int]:
    """Read and parse one label file (see `parse_labels`); unreadable text is a problem."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        return np.zeros((0, 5)), [DataProblem(path, None, "unreadable label file", str(error))], 0
    return parse_labels(text, path, nc)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image as it will be shown, after EXIF rotation.

    Raises `DataProblemError` for a missing, unreadable or truncated file. Decoding
    every image would be slow, so check the container (and a JPEG's end marker).
    """
    try:
        with Image.open(path) as image:
            image.verify()  # must come first: it leaves the image unusable
        with Image.open(path) as image:
            width, height = image.size
            rotated = image.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
        if path.suffix.lower() in (".jpg", ".jpeg"):
            with open(path, "rb") as file:
                file.seek(-2, os.SEEK_END)
                if file.read() != b"\xff\xd9":
                    raise OSError("truncated JPEG (no end marker)")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise DataProblemError(
            DataProblem(path, None, "unreadable image", f"unreadable image: {error}")
        ) from None
    if width < 2 or height < 2:
        raise DataProblemError(
            DataProblem(path, None, "unreadable image", "image smaller than 2x2")
        )
    return (height, width) if rotated else (width, height)


class DataProblemError(Exception):
    """Internal carrier of a `DataProblem` (turned into a YoloqError in error mode)."""

    def __init__(self, problem: DataProblem):
        super().__init__(str(problem))
        self.problem = problem


def load_images(
    sources: Sequence[str | Path],
    names: Sequence[str],
    on_bad_data: str = "error",
    cache: bool | str | Path = True,
) -> ImageSet:
    """Find, check and label the images of `sources`.

    on_bad_data="error" stops at the first problem with a YoloqError naming the file
    and line; "skip" drops each image whose image or label file has a problem and
    counts it in the returned ImageSet. The label cache (a JSON file beside the label
    folder, or the file `cache` names) keeps what was read, keyed by each file's size
    and mtime, so a second run reads only the files that changed.
    """
    if on_bad_data not in BAD_DATA_MODES:
        raise YoloqError(f"on_bad_data must be one of {BAD_DATA_MODES}, not {on_bad_data!r}")
    images = list_images(sources)
    if not images:
        raise YoloqError(f"no images found in {', '.join(map(str, sources))}")
    cache_file = _cache_file(images, cache)
    cached = _read_cache(cache_file, len(names))
    entries, labels_read = {}, 0
    for image in images:
        key, signature = str(image), _signatures(image)
        entry = cached.get(key)
        if entry is None or entry["signature"] != signature:
            entry = _scan_image(image, len(names), signature)
            labels_read += entry["label_read"]
        entries[key] = entry
        if on_bad_data == "error" and entry["problems"]:
            raise YoloqError(str(_problem_from_json(entry["problems"][0])))
    if cache_file and entries != {k: cached.get(k) for k in entries}:
        _write_cache(cache_file, len(names), {**cached, **entries})
    image_set = _assemble(entries, tuple(names))
    image_set.labels_read = labels_read
    image_set.sources = tuple(map(Path, sources))
    return image_set


def load_split(
    config: DataConfig, split: str, on_bad_data: str = "error", cache: bool | str | Path = True
) -> ImageSet:
    """`load_images` on one split of a data YAML."""
    return load_images(config.sources(split), config.names, on_bad_data, cache)


def _signatures(image: Path) -> list:
    def signature(path: Path):
        try:
            stat = path.stat()
        except OSError:
            return None
        return [stat.st_size, stat.st_mtime_ns]

    return [signature(image), signature(label_path(image))]


def _scan_image(image: Path, nc: int, signature: list) -> dict:
    """Check one image and its label file; a JSON-ready cache entry."""
    entry = {"signature": signature, "size": None, "labels": [], "problems": [], "warnings": []}
    entry["label_read"] = 0
    try:
        entry["size"] = image_size(image)
    except DataProblemError as error:
        entry["problems"].append(_problem_to_json(error.problem))
        return entry
    label_file = label_path(image)
    if signature[1] is None:
        return entry  # no label file: a background image
    labels, problems, duplicates = read_label_file(label_file, nc)
    entry["label_read"] = 1
    entry["labels"] = labels.tolist()
    entry["problems"] = [_problem_to_json(p) for p in problems]
    if duplicates:
        detail = f"{duplicates} duplicate row(s) removed"
        entry["warnings"] = [
            _problem_to_json(DataProblem(label_file, None, "duplicate rows", detail))
        ]
        entry["duplicates"] = duplicates
    return entry


def _assemble(entries: dict, names: tuple[str, ...]) -> ImageSet:
    image_set = ImageSet(records=[], names=names)
    for key, entry in entries.items():
        image_set.warnings.extend(_problem_from_json(w) for w in entry["warnings"])
        image_set.duplicate_rows += entry.get("duplicates", 0)
        if entry["problems"]:
            image_set.problems.extend(_problem_from_json(p) for p in entry["problems"])
            image_set.dropped_images += 1
            bad_rows = sum(1 for problem in entry["problems"] if problem[1] is not None)
            image_set.dropped_labels += len(entry["labels"]) + bad_rows
            continue
        labels = np.array(entry["labels"], dtype=np.float32).reshape(-1, 5)
        width, height = entry["size"]
        image_set.records.append(ImageRecord(Path(key), width, height, labels))
        image_set.backgrounds += len(labels) == 0
    return image_set


def _problem_to_json(problem: DataProblem) -> list:
    return [str(problem.path), problem.line, problem.reason, problem.detail]


def _problem_from_json(item: list) -> DataProblem:
    path, line, reason, detail = item
    return DataProblem(Path(path), line, reason, detail)


def _cache_file(images: list[Path], cache: bool | str | Path) -> Path | None:
    if cache is False:
        return None
    if cache is not True:
        return Path(cache)
    # labels/val2017 -> labels/val2017.yoloq-cache.json, beside the labels it describes.
    label_dir = label_path(images[0]).parent
    return label_dir.with_name(label_dir.name + ".yoloq-cache.json")


def _read_cache(cache_file: Path | None, nc: int) -> dict:
    if cache_file is None or not cache_file.is_file():
        return {}
    try:
        data = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}  # a damaged cache is rebuilt, never trusted
    if data.get("version") != CACHE_VERSION or data.get("nc") != nc:
        return {}  # class-range checks depend on nc
    return data.get("entries", {})


def _write_cache(cache_file: Path, nc: int, entries: dict) -> None:
    payload = {"version": CACHE_VERSION, "nc": nc, "entries": entries}
    temporary = cache_file.with_name(cache_file.name + f".{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(payload))
        temporary.replace(cache_file)  # atomic, so a parallel reader never sees half a file
    except OSError as error:
        warnings.warn(f"cannot write the label cache {cache_file}: {error}", stacklevel=3)
        temporary.unlink(missing_ok=True)
