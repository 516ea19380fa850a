"""ONNX Runtime CPU latency of yoloq's `ort` profile against the float model and against
ONNX Runtime's own `quantize_static` (QDQ, per-channel, uint8 activations, reduce_range),
all timed interleaved in one process.

Speed only: models may have random weights and calibration uses smooth random images.

    python bench/ort_speed.py --models demo,yolov7-tiny,yolov7 --img 640 --batch 1,8
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import calibration_images, machine, random_detector, write_json
from _peers_tools import ort_quantize_static

from yoloq.export import export_detector
from yoloq.models import load_model
from yoloq.models.quantized import quantize_yolo
from yoloq.quant import calibrate
from yoloq.runtime.bench import benchmark_onnx


def bench_model(name: str, args, folder: Path) -> dict:
    model = random_detector(name) if name != "demo" else _demo()
    images = calibration_images(args.calib_images, args.img)
    float_onnx = export_detector(model, folder / f"{name}_float.onnx", args.img, dynamic=True)
    quantize_yolo(model, "ort", weight_bits=7)
    calibrate(model, images, method="max", show_progress=False)
    yoloq_onnx = export_detector(model, folder / f"{name}_yoloq_ort.onnx", args.img, dynamic=True)
    static_onnx = ort_quantize_static(
        float_onnx, folder / f"{name}_quantize_static.onnx", [x[:1] for x in images]
    )
    paths = [float_onnx, yoloq_onnx, static_onnx]
    result = benchmark_onnx(
        paths, batch_sizes=args.batches, warmup=args.warmup, iters=args.iters, img_size=args.img
    )
    rows = {}
    for label, path in zip(("float", "yoloq_ort", "quantize_static"), paths):
        rows[label] = {
            str(b): {
                "median_ms": result.get(path, b).median_ms,
                "ratio_to_float": result.get(path, b).ratio,
            }
            for b in args.batches
        }
    for batch in args.batches:
        print(
            f"{name} b{batch}: "
            + ", ".join(
                f"{label} {rows[label][str(batch)]['median_ms']:.1f} ms "
                f"({rows[label][str(batch)]['ratio_to_float']:.2f}x)"
                for label in rows
            )
        )
    return rows


def _demo():
    return load_model("demo").fuse().eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo,yolov7-tiny,yolov7")
    parser.add_argument("--img", type=int, default=640)
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--calib-images", type=int, default=8)
    args = parser.parse_args()
    args.batches = tuple(int(b) for b in args.batch.split(","))
    results = {}
    with tempfile.TemporaryDirectory(prefix="yoloq-ort-speed-") as folder:
        for name in args.models.split(","):
            results[name] = bench_model(name, args, Path(folder))
    path = write_json(
        "ort_speed.json",
        {
            "benchmark": "ort_speed",
            "img": args.img,
            "iters": args.iters,
            "models": results,
            "machine": machine(),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
