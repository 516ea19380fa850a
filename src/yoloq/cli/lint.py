"""`yoloq lint`: where TensorRT would insert reformat layers or miss a fusion in a Q/DQ
ONNX model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from yoloq.export.detector import load_onnx
from yoloq.graph.lint import lint_onnx

EPILOG = """examples:
  yoloq lint runs/ptq/ptq_trt.onnx
  yoloq lint model_qdq.onnx --strict     # exit status 1 if anything is found

kinds: concat, maxpool (scales differ around them), shared-tensor (one tensor, several
scales), conv-output-qdq (Q/DQ between a Conv and its activation or residual Add),
float-op (a float op between int8 ops), weight-per-tensor (weights not per channel)."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "lint",
        help="find what breaks TensorRT's fusions in a Q/DQ ONNX",
        description="Read any ONNX model with QuantizeLinear/DequantizeLinear nodes (yoloq's "
        "or another tool's) and list each place where TensorRT would insert a reformat "
        "layer or fail to fuse, then a count by kind.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL.onnx", help="ONNX model with Q/DQ")
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 when anything is found"
    )
    parser.add_argument("--json", action="store_true", help="print findings and counts as JSON")
    parser.set_defaults(func=run)


def run(args) -> int:
    # Only reading the file may fail as the user's problem; an error of the lint itself
    # is a bug in yoloq and must not pass for a bad file.
    report = lint_onnx(load_onnx(Path(args.model)))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for finding in report.findings:
            print(f"{finding.kind:18} {finding.message}")
        counts = ", ".join(f"{kind} {count}" for kind, count in report.counts().items())
        print(f"{len(report.findings)} found: {counts}")
    return 1 if args.strict and not report.clean else 0
