"""`yoloq sensitivity`: which layers lose accuracy in INT8, and which to keep float."""

from __future__ import annotations

import argparse
from pathlib import Path

from yoloq.cli.ptq import DATA_HELP, add_head_option
from yoloq.console import console
from yoloq.workflows.config import check_output_dir
from yoloq.workflows.sensitivity import SensitivityConfig, run_sensitivity
from yoloq.workflows.steps import sensitivity_table

EPILOG = """examples:
  yoloq sensitivity --weights demo --data demo --mode proxy
  yoloq sensitivity --weights yolov7.pt --data coco.yaml --mode map --val-images 500
  yoloq sensitivity --weights demo --data demo --target-drop 0.1 --out runs/sens
  yoloq ptq --weights demo --data demo --ignore-file runs/sens/ignore.txt

An interrupted run resumes: rerun the same command; finished layers are not recomputed."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sensitivity", help="rank layers by the accuracy INT8 costs them; mixed precision",
        description="For each quantized layer, turn only its quantization off (or, with "
        "--inverse, only it on) and measure mAP on the same val images (--mode map), or the "
        "fall of the output error against the float model on a few batches (--mode proxy, "
        "much faster). Writes sensitivity.json after every layer, sensitivity.png, and "
        "ignore.txt for `yoloq ptq --ignore-file`. With --target-drop, keeps the fewest "
        "layers float that bring the mAP drop under the target, in ranking order, each "
        "only where the paired bootstrap interval of its mAP gain on the select images "
        "excludes 0 (a gain inside the noise is not kept). "
        "Under `torchrun --nproc-per-node N yoloq sensitivity ...` the layers are split "
        "across N processes (gloo on the CPU), each writing sensitivity.rankR.json, merged "
        "into sensitivity.json; a rerun after a crash scores only what no process finished.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="float model (.pt, name, 'demo')")
    parser.add_argument("--data", required=True, help=DATA_HELP)
    parser.add_argument("--ptq", help="analyse this ptq.pt (default: PTQ with --method)")
    parser.add_argument("--mode", choices=("map", "proxy"), default="proxy")
    parser.add_argument("--granularity", choices=("layer", "module"), default="layer",
                        help="layer: model.N; module: each quantized module (model.N.conv)")
    parser.add_argument("--inverse", action="store_true",
                        help="map mode: only the layer quantized, all others float")
    parser.add_argument("--val-images", type=int, default=500, help="val images for mAP")
    parser.add_argument("--proxy-batches", type=int, default=4, help="batches for the proxy")
    parser.add_argument("--target-drop", type=float,
                        help="mixed-precision search: target mAP@.5:.95 drop in points")
    parser.add_argument("--max-layers", type=int, default=3, help="most layers kept float")
    parser.add_argument("--top", type=int, default=3,
                        help="without a search: layers written to ignore.txt")
    parser.add_argument("--profile", choices=("trt", "ort"), default="trt")
    parser.add_argument("--method", default="mse", help="calibration method for the PTQ")
    parser.add_argument("--calib-images", type=int, default=256)
    add_head_option(parser)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--img", type=int, help="input size (default: the model's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="runs/sensitivity", help="output folder")
    parser.set_defaults(func=run)


def run(args) -> int:
    fields = ("weights", "data", "out", "ptq", "mode", "granularity", "inverse", "val_images",
              "proxy_batches", "target_drop", "max_layers", "top", "profile", "method",
              "calib_images", "batch", "img", "device", "workers")
    config = SensitivityConfig(**{name: getattr(args, name) for name in fields},
                               quantize_head=bool(args.quantize_head))
    check_output_dir(Path(config.out), exist_ok=True)  # a rerun resumes in its folder
    result = run_sensitivity(config)
    if result is None:  # a torchrun process other than the first: its units are merged
        return 0
    console.print(sensitivity_table(result.ranking, config.mode))
    if result.search:
        search = result.search
        console.print(f"kept float: {', '.join(search.fallback) or 'none'}; mAP@.5:.95 drop "
                      f"{100 * (search.float_map - search.start_map):.2f} -> "
                      f"{100 * search.final_drop:.2f} points")
        for backend, latency in result.latency.items():
            for stats in (s for s in latency.stats if s.model.endswith("mixed.onnx")):
                console.print(f"{backend} latency batch {stats.batch}: {stats.median_ms:.2f} "
                              f"ms, {stats.ratio:.2f}x the all-INT8 model")
    console.print(f"wrote {config.out}: sensitivity.json, sensitivity.png, ignore.txt")
    return 0
