"""`yoloq demo`: the workflow, end to end, on the built-in benchmark."""

from __future__ import annotations

import argparse

from yoloq.workflows.demo import DemoSettings, run_demo


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the whole workflow on the built-in benchmark",
        description="Evaluate the shipped demo model (YOLOv7-tiny, half width, trained on "
        "yoloq's synthetic dataset) in float, quantize it for TensorRT (trt profile) and ONNX "
        "Runtime (ort profile), export both with Q/DQ, evaluate every export in ONNX Runtime "
        "and time it against the float model. Then the hard case: demo-v5 (YOLOv5n, SiLU) with "
        "its detection head quantized too loses points, and the mixed-precision search and a "
        "short QAT are measured trying to win them back (250 images). Every mAP is measured on "
        "the report split, every choice made on the select split, every drop given with its "
        "paired bootstrap 95%% interval. The dataset is generated on first use (about a "
        "minute). Takes under 10 minutes on 2 CPU cores.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="output folder")
    parser.add_argument("--val-images", type=int, default=500,
                        help="evaluate on the first N report (and select) images (default "
                        "500 of 2000, to fit 10 minutes on 2 cores)")
    parser.add_argument("--calib-images", type=int, default=256, help="calibration images")
    parser.add_argument("--workers", type=int, default=2, help="data loader processes")
    parser.add_argument("--qat", action="store_true",
                        help="end with a short QAT step on the trt model (adds "
                        "qat_trt.onnx to OUT and its rows to the report)")
    parser.add_argument("--qat-epochs", type=int, default=2, help="QAT epochs with --qat")
    parser.add_argument("--qat-iters", type=int, default=20, help="QAT batches per epoch")
    parser.add_argument("--no-hard-case", action="store_true",
                        help="skip the hard case (demo-v5 with its head quantized)")
    parser.set_defaults(func=run)


def run(args) -> int:
    run_demo(DemoSettings(out=args.out, val_images=args.val_images,
                          calib_images=args.calib_images, workers=args.workers,
                          qat=args.qat, qat_epochs=args.qat_epochs, qat_iters=args.qat_iters,
                          **({"hard_case": None} if args.no_hard_case else {})))
    return 0
