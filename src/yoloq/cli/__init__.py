"""The `yoloq` command: one subcommand per stage, each a thin call into the library.

Every subcommand lives in its own module of this package and exposes
`register(subparsers)`, which adds its parser and sets `func` to the handler.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from yoloq import __version__
from yoloq.cli import (
    bench,
    data,
    demo,
    eval,
    export,
    lint,
    predict,
    ptq,
    qat,
    rules,
    sensitivity,
    trt,
)
from yoloq.errors import YoloqError

# Order shown in `yoloq --help`: the pipeline, top to bottom.
COMMANDS = [data, ptq, sensitivity, qat, export, rules, lint, eval, bench, trt, predict, demo]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="yoloq",
        description="INT8 quantization of YOLO detectors with explicit Q/DQ "
        "for TensorRT and ONNX Runtime.",
    )
    parser.add_argument("--version", action="version", version=f"yoloq {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(args.func(args) or 0)
    except (YoloqError, OSError) as error:  # OSError: the disk's word on a path (full, denied)
        print(f"yoloq: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("yoloq: interrupted", file=sys.stderr)
        return 130


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line, as errors are: what happened, not where in yoloq's code."""
    print(f"yoloq: warning: {message}", file=file or sys.stderr)
