"""`yoloq rules`: the quantizers that share one scale so that TensorRT fuses Concat and
MaxPool without reformatting."""

from __future__ import annotations

import argparse
import json

from yoloq.models.quantized import placement_groups

EPILOG = """examples:
  yoloq rules yolov7
  yoloq rules demo
  yoloq rules yolov7-tiny.pt                 (an official checkpoint)
  yoloq rules models/custom.yaml --json > groups.json
  yoloq rules runs/ptq/ptq.pt

Each line reads `FOLLOWER match to LEADER`: the follower uses the leader's scale.
Any other torch module, from Python: yoloq.graph.find_scale_groups(model, example)."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "rules",
        help="show the quantizers tied to one scale for TensorRT",
        description="Find, from the model's recorded dataflow, the groups of quantizers "
        "that TensorRT needs to share one scale (all around a Concat, a MaxPool's input and "
        "output, the readers of one tensor, through Upsample and reshapes) and print each "
        "tie. `yoloq ptq` applies them for the trt profile unless --no-rules.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "weights",
        metavar="WEIGHTS",
        help="a yoloq checkpoint (float, or quantized ptq.pt / qat.pt: its recorded ties), "
        "an official YOLOv5 / YOLOv7 .pt, a model YAML, an architecture name (yolov7, "
        "yolov5s, ...) or 'demo'",
    )
    parser.add_argument(
        "--ignore",
        action="append",
        help="regex of module paths to keep float (repeatable), as for ptq",
    )
    parser.add_argument("--json", action="store_true", help="print the groups as JSON")
    parser.set_defaults(func=run)


def display_name(quantizer_path: str) -> str:
    """A quantizer's module, as users name layers: 'model.3.conv.input_quantizer' ->
    'model.3.conv'; other quantizers keep their full path."""
    for suffix in (".input_quantizer", ".input0_quantizer"):
        if quantizer_path.endswith(suffix):
            return quantizer_path[: -len(suffix)]
    return quantizer_path


def run(args) -> int:
    groups = placement_groups(args.weights, tuple(args.ignore or ()))
    if args.json:
        print(json.dumps({"groups": [group.to_dict() for group in groups]}, indent=2))
        return 0
    for group in groups:
        for follower in group.followers:
            print(f"{display_name(follower)} match to {display_name(group.leader)}")
    ties = sum(len(group.followers) for group in groups)
    print(f"{len(groups)} groups, {ties} ties")
    return 0
