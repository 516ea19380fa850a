"""`yoloq predict`: draw a model's detections on images, from any backend."""

from __future__ import annotations

import argparse

from yoloq.predict import DETECTIONS_JSON, predict_images
from yoloq.runtime.backends import BACKENDS, load_predictor


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="draw a model's detections on images",
        description="Run a model (a .pt checkpoint, an ONNX model on ONNX Runtime or OpenVINO, "
        "or a TensorRT engine) on "
        "images and write each image with its boxes, class names and scores into --out "
        "(same file names), and every detection in original pixels to detections.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "sources", nargs="+", metavar="SOURCE", help="images (jpg, png, bmp...), folders or lists"
    )
    parser.add_argument("--weights", required=True, help="model: .pt, .onnx or engine")
    parser.add_argument("--backend", help="run --weights on this backend (one of "
                        f"{', '.join(sorted(BACKENDS))}); default: by its suffix (.onnx: "
                        "onnxruntime, .engine: tensorrt), else torch")
    parser.add_argument("--out", default="runs/predict", help="output folder")
    parser.add_argument("--img", type=int, help="image size; default the model's")
    parser.add_argument("--conf", type=float, default=0.25, help="confidence threshold")
    parser.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold")
    parser.add_argument("--device", default="cpu", help="cpu or cuda:0")
    parser.set_defaults(func=run)


def run(args) -> int:
    predictor = load_predictor(args.weights, device=args.device, backend=args.backend)
    results = predict_images(predictor, args.sources, args.out, args.conf, args.iou,
                             img_size=args.img, device=args.device)  # fmt: skip
    for result in results:
        found = ", ".join(f"{d.name} {d.score:.2f}" for d in result.detections[:5])
        more = f", ... ({len(result.detections)} in all)" if len(result.detections) > 5 else ""
        print(f"{result.source.name}: {found or 'nothing'}{more}")
    print(f"wrote {len(results)} images and {DETECTIONS_JSON} to {args.out} "
          f"({getattr(predictor, 'description', args.weights)})")  # fmt: skip
    return 0
