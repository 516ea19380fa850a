"""`yoloq eval`: COCO mAP of a model on a dataset in YOLO format."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from yoloq.data import create_val_loader, load_data_config, load_split
from yoloq.errors import YoloqError
from yoloq.evaluate import evaluate, print_eval_result
from yoloq.files import write_text_atomic
from yoloq.runtime.backends import BACKENDS, load_predictor


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="COCO mAP of a model on a dataset",
        description="Evaluate a model as YOLOv7's test.py does (rectangular batches, "
        "multi-label NMS, conf 0.001, IoU 0.65) and report COCO mAP@.5:.95 and mAP@.5 "
        "from pycocotools, per class too. Tables show points; the JSON holds fractions.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--weights", required=True,
        help="model: .pt (float or yoloq quantized), .onnx, a TensorRT .engine (from "
        "`yoloq trt build`; runs on the GPU), architecture name, or 'demo'"
    )
    parser.add_argument("--backend", help="run --weights on this backend (one of "
                        f"{', '.join(sorted(BACKENDS))}); default: by its suffix (.onnx: "
                        "onnxruntime, .engine: tensorrt), else torch")
    parser.add_argument("--data", required=True, help="data YAML")
    parser.add_argument("--split", default="val", help="split of the data YAML")
    parser.add_argument("--img", type=int, help="image size; default the model's, else 640")
    parser.add_argument("--batch", type=int, default=16, help="batch size")
    parser.add_argument("--conf", type=float, default=0.001, help="confidence threshold")
    parser.add_argument("--iou", type=float, default=0.65, help="NMS IoU threshold")
    parser.add_argument("--max-det", type=int, default=300, help="detections kept per image")
    parser.add_argument("--device", default="cpu", help="cpu or cuda:0")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--on-bad-data", choices=("error", "skip"), default="error",
                        help="stop at a bad image or label file, or skip and count it")  # fmt: skip
    parser.add_argument("--coco-json", help="COCO instances JSON to use as ground truth")
    parser.add_argument("--out", help="write the result as JSON here")
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.out and Path(args.out).is_dir():
        raise YoloqError(f"--out {args.out} is a folder; give the JSON file to write")
    config = load_data_config(args.data)
    image_set = load_split(config, args.split, on_bad_data=args.on_bad_data)  # fail early
    predictor = load_predictor(args.weights, args.device, args.backend)
    if len(predictor.names) != config.nc:
        raise YoloqError(
            f"{args.weights}: model has {len(predictor.names)} classes, {args.data} has "
            f"{config.nc}"
        )
    img_size = args.img or predictor.img_size
    if image_set.dropped_images:
        print(image_set.drop_summary())
    loader = create_val_loader(image_set, img_size, args.batch, predictor.stride,
                               workers=args.workers)

    with torch.inference_mode():
        result = evaluate(
            predictor,
            loader,
            names=config.names,
            conf_thres=args.conf,
            iou_thres=args.iou,
            max_det=args.max_det,
            ground_truth=args.coco_json,
        )
    result.settings.update(weights=str(args.weights), data=str(args.data), img_size=img_size,
                           backend=predictor.backend, precision=predictor.precision)
    print_eval_result(result)
    if args.out:  # atomically: an interrupted write never leaves a complete-looking JSON
        write_text_atomic(args.out, json.dumps(result.to_dict(), indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0
