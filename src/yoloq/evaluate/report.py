"""Tables of an EvalResult for the terminal, in points (x100) as COCO prints them."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from yoloq.evaluate.coco import STAT_NAMES
from yoloq.evaluate.evaluation import EvalResult


def points(value: float) -> str:
    """A fraction as points with two decimals ('-' when undefined)."""
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def print_eval_result(result: EvalResult, console: Console | None = None) -> None:
    """Print the COCO summary, the per-class AP and the timings."""
    console = console or Console()
    summary = Table(title="COCO bbox metrics (points)")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    for name, value in zip(STAT_NAMES, result.stats, strict=False):
        summary.add_row(name, points(value))
    console.print(summary)

    per_class = Table(title="Per-class AP (points)")
    for column in ("class", "instances", "AP@.5", "AP@.5:.95"):
        per_class.add_column(column, justify="left" if column == "class" else "right")
    per_class.add_row("all", str(sum(result.per_class_instances.values())),
                      points(result.map50), points(result.map50_95), style="bold")  # fmt: skip
    for name, ap in result.per_class_ap.items():
        instances = result.per_class_instances[name]
        per_class.add_row(name, str(instances), points(result.per_class_ap50[name]), points(ap))
    console.print(per_class)
    per_image = 1000 * result.model_seconds / max(result.images, 1)
    console.print(
        f"{result.images} images, {result.detections} detections; "
        f"model {result.model_seconds:.2f} s "
        f"({per_image:.1f} ms/image), evaluation {result.eval_seconds:.2f} s, "
        f"data loading {result.data_seconds:.2f} s"
    )
