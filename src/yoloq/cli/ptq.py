"""`yoloq ptq`: post-training quantization, evaluation, export and report in one run."""

from __future__ import annotations

import argparse

from yoloq.errors import YoloqError
from yoloq.quant import PROFILES
from yoloq.report import print_report
from yoloq.workflows.config import CALIBRATION_CHOICES
from yoloq.workflows.ptq import PtqConfig, read_ignore_file, run_ptq

EPILOG = """examples:
  yoloq ptq --weights demo --data demo --out runs/ptq_demo
  yoloq ptq --weights yolov7.pt --data coco.yaml --img 640 --method mse --calib-images 512 \\
            --ignore 'model\\.105\\.' --out runs/yolov7_ptq
  yoloq ptq --weights demo --data demo --profile ort --weight-bits 7 --out runs/ptq_ort
  yoloq ptq --config runs/ptq_demo/config.yaml --out runs/ptq_again
  yoloq ptq --weights yolov7.pt --data coco.yaml --device cuda --trt --out runs/yolov7_trt

outputs (in --out): config.yaml (rerun with --config), ptq.pt (quantized checkpoint),
ptq_<profile>.onnx (Q/DQ) and float.onnx, report.json and report.md (float vs PTQ, mAP and
ONNX Runtime latency); with --trt also float.engine and ptq_trt.engine (built from *_fp16.onnx
on TensorRT 11), their layer JSON and profiles, and their rows in the report."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "ptq", help="quantize, calibrate, evaluate and export a model (post-training)",
        description="Post-training quantization: load and fuse the model, insert quantizers "
        "(the detection head stays float unless --quantize-head), calibrate on training images, "
        "evaluate float and INT8 mAP on the same report images (the data YAML's val split; "
        "choices look only at its select split) with paired bootstrap intervals, save ptq.pt, "
        "export ONNX with Q/DQ for the chosen runtime, evaluate and time it in ONNX Runtime, "
        "and write the report.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Defaults are None so that values from --config are only overridden when given.
    parser.add_argument("--weights", help="checkpoint (.pt), architecture name, or 'demo'")
    parser.add_argument("--data", help=DATA_HELP)
    parser.add_argument("--config", help="rerun the config.yaml of an earlier run")
    parser.add_argument("--out", help="output folder (default runs/ptq)")
    parser.add_argument("--exist-ok", action="store_true", help="write into a non-empty --out")
    parser.add_argument("--profile", choices=PROFILES,
                        help="trt: Q/DQ on layer inputs, int8: for TensorRT, and the same ONNX "
                        "for OpenVINO (--backend openvino); ort: every tensor, uint8 "
                        "activations (ONNX Runtime CPU). Default trt")
    parser.add_argument("--method", choices=CALIBRATION_CHOICES,
                        help="calibration method (default mse); auto: calibrate with each "
                        "from one pass of histograms and keep the best on the select split")
    parser.add_argument("--percentile", type=float, help="for --method percentile (99.99)")
    parser.add_argument("--calib-images", type=int, help="calibration images (default 256)")
    parser.add_argument("--batch", type=int, help="batch size (default 8)")
    parser.add_argument("--img", type=int, help="input size (default: the model's, else 640)")
    add_placement_options(parser)
    parser.add_argument("--val-images", type=int, help="evaluate on the first N val images")
    parser.add_argument("--device", help="cpu or cuda:0 (default cpu)")
    parser.add_argument("--workers", type=int, help="data loader processes (default 2)")
    parser.add_argument("--seed", type=int, help="calibration sampling seed (default 0)")
    parser.add_argument("--on-bad-data", choices=("error", "skip"),
                        help="stop at a bad image/label file (default), or skip and count it")
    parser.add_argument("--adaround", action="store_true", default=None,
                        help="after calibration, learn each convolution's weight rounding "
                        "on the calibration images (AdaRound; minutes on a CPU)")
    parser.add_argument("--bias-correction", action="store_true", default=None,
                        help="after calibration, shift each convolution's bias by the mean "
                        "output error its rounded weights cause")
    parser.add_argument("--trt", action="store_true", default=None,
                        help="also build TensorRT engines of the float model (FP16) and of "
                        "the PTQ model (INT8), evaluate and time them (report rows: mAP, "
                        "qps); needs the tensorrt extra and an NVIDIA GPU (use --device cuda)")
    parser.set_defaults(func=run)


DATA_HELP = ("data YAML (train: calibration and QAT images; select: the images choices are "
             "made on; val: the report images; without select, a seeded 20%% of val is held "
             "out to choose on), or 'demo' for the built-in benchmark (500 select, 2000 "
             "report images)")


def add_placement_options(parser, scope: str = "") -> None:
    """What is quantized and how: --ignore, --ignore-file, --weight-bits, --no-rules
    (`scope` starts each help, e.g. "PTQ: " where the command runs PTQ first)."""
    parser.add_argument("--ignore", action="append",
                        help=f"{scope}regex of module paths to keep float (repeatable), e.g. "
                        "'model\\.105\\.'")
    parser.add_argument("--ignore-file", help=f"{scope}file with one ignore regex per line")
    parser.add_argument("--weight-bits", type=int, choices=(7, 8),
                        help=f"{scope}ort profile: 7-bit weights for CPUs without VNNI "
                        "(default 8)")
    parser.add_argument("--no-rules", dest="rules", action="store_false", default=None,
                        help=f"{scope}trt profile: do not tie the scales around Concat/MaxPool "
                        "and leave residual adds unquantized (for comparison)")
    parser.add_argument("--int8-weights", action=argparse.BooleanOptionalAction, default=None,
                        help=f"{scope}store quantized weights in the ONNX as int8 integers read "
                        "through their DequantizeLinear (the same outputs, files ~4x smaller). "
                        "Default: on for the ort profile (ONNX Runtime and OpenVINO fold it); "
                        "off for trt until a TensorRT build has checked this form")
    add_head_option(parser, scope)


def add_head_option(parser, scope: str = "") -> None:
    parser.add_argument("--quantize-head", action="store_true", default=None,
                        help=f"{scope}quantize the detection head's convolutions too (Model "
                        "Optimizer's and NNCF's default; harder on accuracy); the box decode "
                        "stays float. Default: the head stays float")


def given_ignores(args) -> list[str]:
    """The --ignore regexes, then those of --ignore-file."""
    ignore = list(args.ignore or [])
    if args.ignore_file:
        ignore += read_ignore_file(args.ignore_file)
    return ignore


# Command-line options that map one to one onto PtqConfig fields.
_FIELDS = ("weights", "data", "out", "profile", "method", "percentile", "calib_images", "batch",
           "img", "weight_bits", "val_images", "device", "workers", "seed", "on_bad_data",
           "rules", "quantize_head", "int8_weights", "trt", "adaround", "bias_correction")


def build_config(args):
    settings = PtqConfig.load(args.config).to_dict() if args.config else {}
    settings.update({name: getattr(args, name) for name in _FIELDS
                     if getattr(args, name) is not None})
    ignore = given_ignores(args)
    if ignore:
        settings["ignore"] = ignore
    for required in ("weights", "data"):
        if not settings.get(required):
            raise YoloqError(f"--{required} is required (or --config)")
    return PtqConfig.from_dict(settings)


def run(args) -> int:
    config = build_config(args)
    result = run_ptq(config, exist_ok=args.exist_ok)
    print_report(result.report)
    print(f"wrote {result.out}: ptq.pt, {result.onnx.name}, report.json, report.md")
    return 0
