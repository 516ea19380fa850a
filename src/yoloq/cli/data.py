"""`yoloq data check`: read a dataset, count what is in it, list every problem."""

from __future__ import annotations

import argparse
from collections import Counter

from rich.console import Console
from rich.table import Table

from yoloq.data import load_data_config, load_split
from yoloq.data.synthetic import ensure_dataset


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="inspect a dataset in YOLO format")
    parser.set_defaults(func=lambda args: parser.print_help())
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    check = commands.add_parser(
        "check",
        help="count images, boxes and problems of a dataset",
        description="Read every image and label file of a data YAML (skip mode: nothing "
        "stops at the first problem), print counts per split and class, and list each "
        "problem with its file and line. Exits 1 when problems were found.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    check.add_argument("data", help="data YAML (train/val/names, as YOLO's coco.yaml)")
    check.add_argument("--split", action="append", help="split to check (repeat); default all")
    check.add_argument(
        "--no-cache", action="store_true", help="ignore and do not write the label cache"
    )
    check.add_argument(
        "--max-problems", type=int, default=50, help="problems and warnings listed per split"
    )
    check.set_defaults(func=run_check)

    synth = commands.add_parser(
        "synth",
        help="generate the synthetic benchmark dataset",
        description="Write yoloq's synthetic detection dataset in YOLO format (8 shape classes, "
        "8 px to half-image objects, occlusion, clutter, textured backgrounds) with its "
        "data.yaml. The same seed gives the same files. With --report-images the val images "
        "become the `select` split (where yoloq makes its choices: calibration method, "
        "sensitivity search, QAT's best epoch) and the report images, drawn from other "
        "seeds, the `val` split every mAP is reported on. `--data demo` elsewhere uses the "
        "default set (4000 train, 500 select, 2000 report, 320 px, seed 0) from the cache "
        "folder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    synth.add_argument("--out", required=True, help="output folder (created)")
    synth.add_argument("--images", type=int, default=4000, help="training images")
    synth.add_argument("--val-images", type=int, default=500,
                       help="validation images (the select split with --report-images)")
    synth.add_argument("--report-images", type=int, default=0,
                       help="held-apart images to report on (the demo set has 2000)")
    synth.add_argument("--size", type=int, default=320, help="image size in pixels")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, help="processes (default: all cores)")
    synth.set_defaults(func=run_synth)


def run_synth(args) -> int:
    data_yaml = ensure_dataset(args.out, train_images=args.images, val_images=args.val_images,
                               size=args.size, seed=args.seed, workers=args.workers,
                               report_images=args.report_images)
    print(f"wrote {data_yaml}")
    return 0


def run_check(args) -> int:
    console = Console()
    config = load_data_config(args.data)
    found_problems = False
    for split in args.split or list(config.splits):
        image_set = load_split(config, split, on_bad_data="skip", cache=not args.no_cache)
        _print_split(console, split, image_set, args.max_problems)
        found_problems |= bool(image_set.problems)
    return 1 if found_problems else 0


def _print_split(console, split: str, image_set, max_problems: int) -> None:
    counts = Counter()
    for record in image_set.records:
        counts.update(record.labels[:, 0].astype(int).tolist())
    sizes = Counter((r.width, r.height) for r in image_set.records)
    summary = Table(title=f"{split}: {len(image_set)} images")
    summary.add_column("")
    summary.add_column("count", justify="right")
    rows = {
        "images kept": len(image_set),
        "background images (no objects)": image_set.backgrounds,
        "boxes": sum(counts.values()),
        "images dropped": image_set.dropped_images,
        "labels dropped": image_set.dropped_labels,
        "duplicate rows removed": image_set.duplicate_rows,
    }
    for name, value in rows.items():
        summary.add_row(name, str(value))
    for reason, count in sorted(image_set.drop_reasons().items()):
        summary.add_row(f"  problem: {reason}", str(count))
    for (width, height), count in sizes.most_common(3):
        summary.add_row(f"  image size {width}x{height}", str(count))
    console.print(summary)

    classes = Table(title=f"{split}: boxes per class")
    classes.add_column("id", justify="right")
    classes.add_column("class")
    classes.add_column("boxes", justify="right")
    for index, name in enumerate(image_set.names):
        classes.add_row(str(index), name, str(counts[index]))
    console.print(classes)

    listed = image_set.problems + image_set.warnings
    if listed:
        title = f"{split}: {len(image_set.problems)} problems, {len(image_set.warnings)} warnings"
        problems = Table(title=title)
        for column in ("file", "line", "problem"):
            problems.add_column(column, overflow="fold")
        for problem in listed[:max_problems]:
            warning = "(warning) " if problem in image_set.warnings else ""
            problems.add_row(str(problem.path), str(problem.line or ""), warning + problem.detail)
        console.print(problems)
