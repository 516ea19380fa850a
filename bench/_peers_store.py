"""The results file of bench/peers.py: rows written as they finish, kept on --resume."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from _common import RESULTS, machine
from _peers_report import print_row

from yoloq.runtime.bench import benchmark_onnx


class Store:
    """The results JSON, rewritten after every row, with the ONNX files in `work`.

    `wall_seconds` adds up every run that wrote it (a resumed run carries on the count);
    `load_average` is the machine's 1-minute load when the first began and at the last
    save: other work on the machine slows every tool alike, but it shows in the times."""

    def __init__(self, path: Path, work: Path, settings, resume: bool):
        self.path, self.work = path, work
        self.started, self.before = time.perf_counter(), 0.0
        plain = json.loads(json.dumps(asdict(settings)))
        self.data = {
            "benchmark": "peers",
            "settings": plain,
            "machine": machine(),
            "versions": versions(),
            "sections": {},
        }
        saved = json.loads(path.read_text()) if resume and path.is_file() else None
        if saved and saved.get("settings") == plain:
            self.data["sections"] = saved["sections"]
            self.before = saved.get("wall_seconds", 0.0)
            self.data["load_average"] = saved.get("load_average")
        else:
            if saved:
                print(f"{path} was made with other settings: starting over")
            shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True, exist_ok=True)

    def section(self, name: str) -> dict:
        return self.data["sections"].setdefault(name, {"rows": {}, "latency": None})

    def save(self) -> None:
        load = os.getloadavg()[0]
        first = self.data.get("load_average") or {"start": load}
        self.data["load_average"] = {**first, "end": load}
        self.data["wall_seconds"] = round(self.before + time.perf_counter() - self.started, 1)
        RESULTS.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.data, indent=1) + "\n")
        temporary.replace(self.path)


def versions() -> dict[str, str | None]:
    def of(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    names = ("yoloq", "torch", "onnx", "onnxruntime", "nvidia-modelopt", "nncf")
    return {name: of(name) for name in names}


def run_row(store: Store, section: str, key: str, label: dict, build, evaluate=None) -> dict:
    """A row: `build()` writes an ONNX and returns {"onnx": path, ...}; `evaluate(path)`
    scores it and returns the fields to add. A finished row (its ONNX still there) is
    kept as it is; a failed one is retried."""
    rows = store.section(section)["rows"]
    row = rows.pop(key, None)  # put back below: the rows keep the order the code runs them
    if row and not row.get("error") and (store.work / row["onnx"]).is_file():
        rows[key] = row
        return row
    started = time.perf_counter()
    try:
        built = build()
        row = {**label, "seconds": round(time.perf_counter() - started, 1), **built}
        row["onnx"] = str(Path(built["onnx"]).relative_to(store.work))
        if evaluate is not None:
            row.update(evaluate(store.work / row["onnx"]))
    except Exception as error:  # a peer's failure is a result too
        row = {**label, "error": f"{type(error).__name__}: {error}"}
    rows[key] = row
    store.section(section)["latency"] = None  # a new model: time them all again
    store.save()
    print_row(section, key, row)
    return row


def time_section(store: Store, section: str, img: int, batches, warmup: int, iters: int):
    """Every model of the section interleaved with the float one (the first)."""
    data = store.section(section)
    if data["latency"]:
        return
    keys = [key for key, row in data["rows"].items() if not row.get("error")]
    keys.sort(key=lambda key: key != "float")
    paths = [store.work / data["rows"][key]["onnx"] for key in keys]
    result = benchmark_onnx(paths, batch_sizes=batches, warmup=warmup, iters=iters, img_size=img)
    models = {
        key: {
            str(b): {
                "median_ms": round(result.get(path, b).median_ms, 2),
                "p90_ms": round(result.get(path, b).p90_ms, 2),
                "ratio": round(result.get(path, b).ratio, 3),
            }
            for b in batches
        }
        for key, path in zip(keys, paths)
    }
    data["latency"] = {"settings": result.settings, "models": models}
    store.save()
