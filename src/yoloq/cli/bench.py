"""`yoloq bench`: ONNX Runtime CPU latency and throughput of a model, or of two compared."""

from __future__ import annotations

import argparse


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
        help="latency and throughput of ONNX models in ONNX Runtime",
        description="Time an ONNX model on the CPU with random input: warm-up runs, then "
        "timed runs; report median and p90 latency and images/s per batch size. With --vs, "
        "both models run interleaved in one process (timings drift by +-20% between runs, "
        "so only models timed together compare fairly) and the table shows the ratio "
        "MODEL/OTHER of median latencies (below 1: MODEL is faster).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("model", help="ONNX model with an image input [batch, 3, H, W]")
    parser.add_argument("--vs", metavar="OTHER", help="ONNX model to compare with (baseline)")
    parser.add_argument("--batch", type=batch_list, default="1,8", help="batch sizes, e.g. 1,8")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs per model and batch")
    parser.add_argument("--iters", type=int, default=50, help="timed runs per model and batch")
    parser.add_argument("--threads", type=int, help="intra-op threads; none: all cores")
    parser.add_argument("--img", type=int, help="height and width, where the ONNX has them dynamic")
    parser.add_argument("--json", metavar="OUT", help="write the result as JSON here")
    parser.set_defaults(func=run)


def run(args) -> int:
    import json

    from yoloq.report import write_text_atomic
    from yoloq.runtime.bench import benchmark_onnx, print_bench_result

    # The baseline goes first: each model's ratio is to the first one.
    paths = [args.vs, args.model] if args.vs else [args.model]
    result = benchmark_onnx(paths, batch_sizes=args.batch, warmup=args.warmup,
                            iters=args.iters, threads=args.threads, img_size=args.img)  # fmt: skip
    print_bench_result(result)
    if args.json:
        write_text_atomic(args.json, json.dumps(result.to_dict(), indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
