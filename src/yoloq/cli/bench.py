"""`yoloq bench`: latency and throughput of a model, or of two compared, on a backend
(ONNX Runtime on the CPU unless --backend names another)."""

from __future__ import annotations

import argparse
import json

from yoloq.errors import YoloqError
from yoloq.files import write_text_atomic
from yoloq.runtime.backends import BACKENDS, backend_for, get_backend
from yoloq.runtime.bench import print_bench_result


def batch_list(text: str) -> tuple[int, ...]:
    """'1,8' -> (1, 8), for argparse."""
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected batch sizes like 1,8, got {text!r}")
    return sizes


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="latency and throughput of exported models (ONNX Runtime, or --backend)",
        description="Time an ONNX model on the CPU with random input: warm-up runs, then "
        "timed runs; report median and p90 latency and images/s per batch size. With --vs, "
        "both models run interleaved in one process (timings drift by +-20% between runs, "
        "so only models timed together compare fairly) and the table shows the ratio "
        "MODEL/OTHER of median latencies (below 1: MODEL is faster).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("model", help="ONNX model with an image input [batch, 3, H, W]")
    parser.add_argument("--vs", metavar="OTHER", help="ONNX model to compare with (baseline)")
    parser.add_argument("--backend", help="time the models on this backend (one of "
                        f"{', '.join(sorted(BACKENDS))}); default: by MODEL's suffix "
                        "(.onnx: onnxruntime)")
    parser.add_argument("--batch", type=batch_list, default="1,8", help="batch sizes, e.g. 1,8")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs per model and batch")
    parser.add_argument("--iters", type=int, default=50, help="timed runs per model and batch")
    parser.add_argument("--threads", type=int, help="intra-op threads; none: all cores")
    parser.add_argument("--img", type=int, help="height and width, where the ONNX has them dynamic")
    parser.add_argument("--json", metavar="OUT", help="write the result as JSON here")
    parser.set_defaults(func=run)


def run(args) -> int:


    # The baseline goes first: each model's ratio is to the first one.
    paths = [args.vs, args.model] if args.vs else [args.model]
    backend = get_backend(args.backend) if args.backend else backend_for(args.model)
    if backend is None:
        raise YoloqError(f"{args.model}: no backend runs this file; name one with --backend")
    # Each backend takes the options it knows (ONNX Runtime: all three).
    # require_int8: OpenVINO fails where a quantized convolution did not run in int8.
    result = backend.bench(paths, args.batch, args.img, warmup=args.warmup, iters=args.iters,
                           threads=args.threads, require_int8=True)
    print_bench_result(result)
    if args.json:
        write_text_atomic(args.json, json.dumps(result.to_dict(), indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
