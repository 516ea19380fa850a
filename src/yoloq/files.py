"""Writing files so that no reader ever sees half of one: every output is made under a
temporary name beside its place and renamed there when complete."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed onto `path` when the block
    ends, removed if it raises. `suffix` (default: `path`'s) is for writers that choose
    the format by it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=path.suffix if suffix is None else suffix,
                                         prefix=".", dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file, so readers never see half of it."""
    with atomic_path(path) as temporary:
        temporary.write_text(text)
    return Path(path)


def write_bytes_atomic(path: str | Path, data) -> Path:
    with atomic_path(path) as temporary:
        temporary.write_bytes(memoryview(data))
    return Path(path)
