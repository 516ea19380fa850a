"""One report for every command that compares models: float vs PTQ vs QAT, per backend.

The API and `report.json` hold mAP as fractions (0..1), as COCOeval gives it;
`report.md`, the terminal table and the plot show points (x100), as papers do.
"""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import onnxruntime
import torch
from rich.console import Console
from rich.table import Table

from yoloq.errors import YoloqError
from yoloq.files import atomic_path, write_text_atomic
from yoloq.models.registry import has_random_weights

# torch and the built-in backends; `yoloq.runtime.backends.register_backend` adds the others,
# so that a report written before a backend was registered in this process still loads.
BACKENDS = {"torch", "onnxruntime", "openvino", "tensorrt"}
PROFILES = ("trt", "ort", None)
PRECISIONS = ("fp32", "fp16", "bf16", "int8")  # bf16: OpenVINO's float on BF16 CPUs
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
# 2: rows carry bootstrap intervals (mAP and drop), the report its evaluation splits and
# the paired per-class and per-size drops; every mAP is measured on the report split.
SCHEMA_VERSION = 2
RANDOM_WEIGHTS_NOTE = ("RANDOM WEIGHTS: the float model was built from an architecture, not "
                       "loaded from a checkpoint, so these mAPs mean nothing")


@dataclass(frozen=True)
class ReportRow:
    """One model on one backend: its accuracy (fractions) and median latency per batch.

    latency_ms maps the batch size, as a string ("1", "8"), to the median in ms.
    """

    model: str
    backend: str
    profile: str | None
    precision: str
    map50_95: float | None = None
    map50: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    notes: str = ""
    # Paired bootstrap 95% intervals over the evaluated images (fractions): of mAP@.5:.95,
    # and of the drop from the backend's float row (the row the table compares it with).
    map50_95_interval: list[float] | None = None
    drop_interval: list[float] | None = None

    def __post_init__(self):
        _check_choice("backend", self.backend, tuple(sorted(BACKENDS)))
        _check_choice("profile", self.profile, PROFILES)
        _check_choice("precision", self.precision, PRECISIONS)
        for name in ("map50_95", "map50"):
            value = getattr(self, name)
            if value is not None and math.isnan(value):
                object.__setattr__(self, name, None)  # undefined, as None in JSON
            elif value is not None and not 0 <= value <= 1:
                raise YoloqError(f"{self.model}: {name} {value} is not a fraction 0..1 "
                                 "(the report holds fractions, not points)")  # fmt: skip
        # JSON keys are strings; accept int batch sizes from callers.
        latency = {str(batch): float(ms) for batch, ms in self.latency_ms.items()}
        object.__setattr__(self, "latency_ms", latency)


def _check_choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise YoloqError(f"report: {name} {value!r} is not one of {', '.join(map(str, choices))}")


def machine_info() -> dict:
    """Where the numbers were measured: platform, CPU, library versions, GPU."""
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "cuda_device": cuda,
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Report:
    """Rows to compare, with the run's config and the machine they were measured on."""

    rows: list[ReportRow] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    machine: dict = field(default_factory=machine_info)
    created: str = field(default_factory=_now)
    # Whether the float model was built untrained (an architecture name or model YAML as
    # --weights). None: decided from config["weights"], which every workflow's config has,
    # so that no workflow can write a report of a random model without saying so.
    random_weights: bool | None = None
    splits: dict = field(default_factory=dict)  # the select and report images (data.splits)
    # Per quantized row (by `row_key`): PairedIntervals.to_dict(), per class and per size.
    paired: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.random_weights is None:
            weights = self.config.get("weights")
            self.random_weights = weights is not None and has_random_weights(weights)

    def add(self, row: ReportRow) -> Report:
        self.rows.append(row)
        return self

    def to_dict(self) -> dict:
        """A JSON-ready dict (mAP as fractions)."""
        return {"schema_version": SCHEMA_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> Report:
        """A report from its JSON dict; one written by a newer yoloq is refused (its rows
        may mean something this version cannot tell)."""
        version = data.get("schema_version", data.get("version", 1))  # "version" until 0.1
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise YoloqError(f"report schema_version {version} is newer than this yoloq reads "
                             f"({SCHEMA_VERSION}); upgrade yoloq to read it")
        return cls(
            rows=[ReportRow(**row) for row in data.get("rows", [])],
            config=data.get("config", {}),
            machine=data.get("machine", {}),
            created=data.get("created", ""),
            random_weights=data.get("random_weights"),
            splits=data.get("splits", {}),
            paired=data.get("paired", {}),
        )

    def save(self, folder: str | Path) -> Path:
        """Write report.json and report.md into `folder` (created), each atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / REPORT_JSON, json.dumps(self.to_dict(), indent=2) + "\n")
        write_text_atomic(folder / REPORT_MD, report_markdown(self))
        return folder

    @classmethod
    def load(cls, path: str | Path) -> Report:
        """Read a report.json, or the one in a report folder."""
        path = Path(path)
        if path.is_dir():
            path = path / REPORT_JSON
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise YoloqError(f"{path}: not a readable yoloq report ({error})") from None
        try:
            return cls.from_dict(data)
        except YoloqError as error:
            raise YoloqError(f"{path}: {error}") from None
        except TypeError as error:
            raise YoloqError(f"{path}: not a readable yoloq report ({error})") from None


# --- the comparison table, shared by Markdown and the terminal -------------------------


def batch_sizes(report: Report) -> list[str]:
    """Every batch size with a latency in some row, in numeric order."""
    return sorted({batch for row in report.rows for batch in row.latency_ms}, key=int)


def reference_rows(report: Report) -> dict[str, ReportRow]:
    """Per backend, the row others are compared with: its first fp32 row, else its first
    fp16 row (TensorRT's float baseline is an FP16 engine), else bf16 (OpenVINO's float
    on CPUs with BF16)."""
    references: dict[str, ReportRow] = {}
    for precision in ("fp32", "fp16", "bf16"):
        for row in report.rows:
            if row.precision == precision:
                references.setdefault(row.backend, row)
    return references


def table_cells(report: Report, compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """Headers and text cells: mAP in points, drop in points, latency and ratio per batch.

    `compact` (the terminal) gives the interval on the drop only, without spaces."""
    batches = batch_sizes(report)
    headers = ["model", "backend", "profile", "precision", "mAP@.5:.95", "drop",
               "mAP@.5"]  # fmt: skip
    for batch in batches:
        headers += [f"ms b{batch}", f"x float b{batch}"]
    headers.append("notes")
    references = reference_rows(report)
    rows = []
    for row in report.rows:
        reference = references.get(row.backend)
        cells = [row.model, row.backend, row.profile or "-", row.precision,
                 _points(row.map50_95, None if compact else row.map50_95_interval),
                 _drop(reference, row, compact), _points(row.map50)]  # fmt: skip
        for batch in batches:
            cells += [_ms(row.latency_ms.get(batch)), _ratio(reference, row, batch)]
        rows.append([*cells, row.notes])
    return headers, rows


def row_key(row: ReportRow) -> str:
    """A row's name in `Report.paired`: model, backend, precision, profile."""
    return " ".join(part for part in (row.model, row.backend, row.precision, row.profile)
                    if part)


def _points(value: float | None, interval: list[float] | None = None) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}" + (_span(interval) if interval else "")


def _span(interval: list[float], compact: bool = False) -> str:
    low, high = interval
    if low is None or high is None:
        return " [-]"
    separator = "," if compact else ", "
    return f" [{100 * low:.2f}{separator}{100 * high:.2f}]"


def _drop(reference: ReportRow | None, row: ReportRow, compact: bool = False) -> str:
    """Points lost against the float row of the backend (negative: a gain), with its
    interval; `*` where the interval excludes 0 (a difference the images support)."""
    if reference is None or reference.map50_95 is None or row.map50_95 is None:
        return "-"
    text = f"{100 * (reference.map50_95 - row.map50_95):.2f}"
    if row is reference or not row.drop_interval:
        return text
    low, high = row.drop_interval
    significant = low is not None and high is not None and (low > 0 or high < 0)
    return text + _span(row.drop_interval, compact) + ("*" if significant else "")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _latency_ratio(reference: ReportRow | None, row: ReportRow, batch: str) -> float | None:
    base = reference.latency_ms.get(batch) if reference else None
    value = row.latency_ms.get(batch)
    return value / base if base and value is not None else None


def _ratio(reference: ReportRow | None, row: ReportRow, batch: str) -> str:
    ratio = _latency_ratio(reference, row, batch)
    return "-" if ratio is None else f"{ratio:.2f}x"


def report_markdown(report: Report) -> str:
    """The report as Markdown: the table, then the machine and the config."""
    headers, rows = table_cells(report)
    lines = [
        "# yoloq report",
        "",
        f"Created {report.created}. mAP in points (x100), measured on the report split"
        f"{_splits_text(report.splits)}; drop: points lost against the "
        "first fp32 row of the same backend (fp16 for TensorRT); [low, high]: paired "
        "bootstrap 95% interval over the images, `*` where it excludes 0; ms: median "
        "latency per batch size; x float: latency ratio to that row.",
        "",
        *([f"**{RANDOM_WEIGHTS_NOTE}**", ""] if report.random_weights else []),
        "| " + " | ".join(headers) + " |",
        "|"
        + "|".join("---" if i < 4 or i == len(headers) - 1 else "---:" for i in range(len(headers)))
        + "|",  # fmt: skip
    ]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    lines += _paired_markdown(report)
    lines += ["", "## Machine", ""]
    lines += [f"- {key}: {value}" for key, value in report.machine.items()]
    lines += ["", "## Config", "", "```json", json.dumps(report.config, indent=2), "```", ""]
    return "\n".join(lines)


def _splits_text(splits: dict) -> str:
    if not splits:
        return ""
    return (f" ({splits.get('report_images')} images; choices were made on "
            f"{splits.get('select_images')} select images, {splits.get('origin')})")


def _paired_markdown(report: Report) -> list[str]:
    """Per quantized row: the drop per class and per object size, with intervals."""
    lines = []
    for key, paired in report.paired.items():
        lines += ["", f"## Drops of {key} (points, paired bootstrap 95%, "
                  f"{paired['resamples']} resamples)", "",
                  "| part | float | quantized | drop | interval |", "|---|---:|---:|---:|---|"]
        parts = [("all classes", paired["map50_95"]),
                 *((f"class {name}", v) for name, v in paired["per_class"].items()),
                 *((f"{area} objects", v) for area, v in paired["by_area"].items())]
        for name, value in parts:
            lines.append(f"| {name} | {_points(value['a'])} | {_points(value['b'])} | "
                         f"{_points(value['drop'])} |{_span(value['drop_interval'])} |")
    return lines


def print_report(report: Report, console: Console | None = None) -> None:
    """Print the comparison table (points, drop, latency and ratio per batch size).

    One short label per row (backend, precision, profile) keeps it within 80 columns;
    the model names go into the title, and the notes column only appears when used.
    """
    headers, rows = table_cells(report, compact=True)
    models = ", ".join(dict.fromkeys(row[0] for row in rows))
    table = Table(title=f"{models}: mAP in points; drop [95% interval, * excludes 0] and "
                  "latency ratio vs fp32 of the same backend",
                  caption=RANDOM_WEIGHTS_NOTE if report.random_weights else None,
                  caption_style="bold yellow")
    table.add_column("run")
    for header in headers[4:-1]:
        header = header.replace("x float ", "ratio ").replace(" b", "\nb").replace("@", "\n@")
        table.add_column(header, justify="right", no_wrap=True)
    with_notes = any(row[-1] for row in rows)
    if with_notes:
        table.add_column("notes", overflow="fold")
    for row in rows:
        _, backend, profile, precision = row[:4]
        label = " ".join(part for part in (_SHORT.get(backend, backend), precision, profile)
                         if part and part != "-")
        table.add_row(label, *row[4:-1], *([row[-1]] if with_notes else []))
    (console or Console()).print(table)


_SHORT = {"onnxruntime": "onnxrt", "tensorrt": "trt-engine"}


def plot_report(report: Report, path: str | Path) -> Path:
    """A PNG: mAP@.5:.95 (points) per row, and latency ratio to float per batch size."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global state, no display

    labels = [_row_label(row) for row in report.rows]
    references = reference_rows(report)
    figure = Figure(figsize=(max(6.0, 1.2 * len(labels) + 3), 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    accuracy, speed = figure.subplots(1, 2)
    maps = [100 * row.map50_95 for row in report.rows if row.map50_95 is not None]
    bars = accuracy.bar(range(len(labels)), [_nan_if_none(r.map50_95, 100) for r in report.rows])
    accuracy.bar_label(bars, labels=[_points(row.map50_95) for row in report.rows], fontsize=8)
    accuracy.set(title="mAP@.5:.95 (points)", xticks=range(len(labels)))
    accuracy.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    if maps:  # differences are fractions of a point: do not start the axis at 0
        accuracy.set_ylim(max(0.0, min(maps) - 5), max(maps) + 1)
    batches = batch_sizes(report)
    width = 0.8 / max(1, len(batches))
    for i, batch in enumerate(batches):
        ratios = [
            _nan_if_none(_latency_ratio(references.get(row.backend), row, batch))
            for row in report.rows
        ]
        positions = [x + (i - (len(batches) - 1) / 2) * width for x in range(len(labels))]
        speed.bar(positions, ratios, width=width, label=f"batch {batch}")
    speed.axhline(1.0, color="gray", linewidth=0.8, linestyle="--")
    speed.set(title="latency / float (lower is faster)", xticks=range(len(labels)))
    speed.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    if batches:
        speed.legend(fontsize=8)
    with atomic_path(path, ".png") as temporary:
        figure.savefig(temporary, format="png", dpi=120)
    return Path(path)


def _row_label(row: ReportRow) -> str:
    parts = [row.model, row.backend, row.precision] + ([row.profile] if row.profile else [])
    return "\n".join([parts[0], " ".join(parts[1:])])


def _nan_if_none(value: float | None, scale: float = 1.0) -> float:
    return math.nan if value is None else scale * value  # matplotlib leaves nan bars out
