"""`yoloq trt build | bench | draw`: TensorRT engines from yoloq's ONNX, their speed, and
a drawing of what TensorRT made of them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from yoloq.errors import YoloqError
from yoloq.files import write_text_atomic
from yoloq.runtime.tensorrt import (
    BuildSettings,
    benchmark_engine,
    build_engine,
    draw_engine,
    load_engine_graph,
)
from yoloq.runtime.tensorrt.api import load_tensorrt
from yoloq.runtime.tensorrt.layers import summarize

EPILOG = """examples:
  yoloq export --weights runs/ptq/ptq.pt --fp16 --dynamic --out ptq_fp16.onnx
  yoloq trt build ptq_fp16.onnx --dynamic --out ptq.engine   # + ptq.layers.json
  yoloq trt bench ptq.engine --batch 8                        # + ptq.profile.json
  yoloq trt draw --layers ptq.layers.json --profile ptq.profile.json --out ptq.html
  yoloq eval --weights ptq.engine --data coco.yaml

build and bench need the `tensorrt` extra (pip install 'yoloq[tensorrt]', TensorRT 10 or
11) and an NVIDIA GPU; draw needs neither, and reads the layer JSON of TensorRT 8.6 to 11
(from yoloq, trtexec --exportLayerInfo --exportProfile, or the engine inspector)."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "trt",
        help="build, time and draw TensorRT engines",
        description="TensorRT engines of yoloq's ONNX, through TensorRT's Python API. "
        "TensorRT 10 builds with BuilderFlag FP16 (+ INT8 for Q/DQ models); TensorRT 11, "
        "which removed those flags, builds strongly typed networks whose float layers run "
        "in the ONNX's type: export with --fp16 for FP16 layers.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _register_build(commands)
    _register_bench(commands)
    _register_draw(commands)
    parser.set_defaults(func=lambda args: parser.print_help() or 0)


def batch_range(text: str) -> tuple[int, int, int]:
    """'8' -> (8, 8, 8); '1,8,16' -> (1, 8, 16), for argparse."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if len(sizes) == 1:
        sizes = sizes * 3
    if len(sizes) != 3 or not 1 <= sizes[0] <= sizes[1] <= sizes[2]:
        raise argparse.ArgumentTypeError(
            f"expected N or min,opt,max with 1 <= min <= opt <= max, got {text!r}"
        )
    return sizes


def _register_build(commands) -> None:
    parser = commands.add_parser(
        "build",
        help="build an engine from an ONNX model",
        description="Parse the ONNX, build with the precision settings of the installed "
        "TensorRT, a timing cache (timing.cache beside the engine, reused by later builds) "
        "and detailed profiling verbosity; save the engine, its layer information "
        "(NAME.layers.json, for `yoloq trt draw`) and NAME.engine.json (class names and "
        "input size, for `yoloq eval`).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("onnx", help="ONNX model exported by yoloq")
    parser.add_argument(
        "--batch",
        type=batch_range,
        help="batch size N or range min,opt,max (tuned for opt); default 1, "
        "or 1,1,16 with --dynamic",
    )
    parser.add_argument(
        "--dynamic",
        action="store_true",
        help="also a height/width range up to the image size, for `yoloq "
        "eval`'s rectangular batches (the ONNX must be exported --dynamic)",
    )
    parser.add_argument("--img", type=int, help="image size (default: the ONNX's metadata)")
    parser.add_argument("--workspace", type=int, default=4096, help="workspace limit, MB")
    parser.add_argument(
        "--timing-cache", help="timing cache file (default: timing.cache beside the engine)"
    )
    parser.add_argument("--out", help="engine file (default: the ONNX's name, .engine)")
    parser.add_argument("--layers", help="layer JSON (default: NAME.layers.json)")
    parser.set_defaults(func=run_build)


def run_build(args) -> int:
    api = load_tensorrt()  # before anything else: the one thing a CPU machine lacks
    batch = args.batch or ((1, 1, 16) if args.dynamic else None)
    settings = BuildSettings(
        batch=batch,
        dynamic=args.dynamic,
        img_size=args.img,
        workspace_mb=args.workspace,
        timing_cache=args.timing_cache,
    )
    result = build_engine(args.onnx, args.out, settings, args.layers, tensorrt=api)
    size = result.engine.stat().st_size / 2**20
    print(
        f"wrote {result.engine} ({size:.1f} MiB) in {result.seconds:.0f} s with TensorRT "
        f"{result.tensorrt}, {result.typing}"
    )
    if result.shapes:
        print("input shapes: " + ", ".join(f"{k} {v}" for k, v in result.shapes.items()))
    try:
        print("\n".join(summarize(load_engine_graph(result.layers)).lines()))
    except YoloqError as error:  # the engine is built; only its summary is missing
        print(f"note: no summary of {result.layers.name}: {error}")
    print(
        f"wrote {result.layers} and {result.metadata.name}; draw it with `yoloq trt draw "
        f"--layers {result.layers}`"
    )
    return 0


def _register_bench(commands) -> None:
    parser = commands.add_parser(
        "bench",
        help="throughput and latency of an engine",
        description="Time the engine as `trtexec --useCudaGraph --noDataTransfers` does: "
        "random input already on the GPU, a CUDA graph of one inference replayed for "
        "--duration seconds after --warmup, each replay timed with CUDA events. Reports "
        "throughput (qps: inferences per second; images/s = qps x batch) and latency "
        "percentiles, and writes a per-layer profile (trtexec --exportProfile's format) "
        "from a separate run without the graph.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("engine", help="engine built by `yoloq trt build`")
    parser.add_argument("--batch", type=int, default=1, help="batch size")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up, seconds")
    parser.add_argument("--duration", type=float, default=3.0, help="timed loop, seconds")
    parser.add_argument(
        "--cuda-graph",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="replay a CUDA graph (as trtexec --useCudaGraph)",
    )
    parser.add_argument("--profile", help="per-layer profile JSON (default: NAME.profile.json)")
    parser.add_argument("--json", metavar="OUT", help="write the result as JSON here")
    parser.set_defaults(func=run_bench)


def run_bench(args) -> int:
    api = load_tensorrt()
    engine = Path(args.engine)
    profile = (
        Path(args.profile) if args.profile else engine.with_name(f"{engine.stem}.profile.json")
    )
    result = benchmark_engine(
        engine,
        args.batch,
        args.warmup,
        args.duration,
        args.cuda_graph,
        profile_path=profile,
        tensorrt=api,
    )
    latency = result.latency_ms
    print(
        f"{engine.name}, batch {result.batch}, {result.runs} runs"
        f"{' (CUDA graph)' if result.cuda_graph else ''}: {result.qps:.1f} qps, "
        f"{result.images_per_s:.1f} images/s"
    )
    print(
        "latency ms: "
        + ", ".join(
            f"{key} {latency[key]:.3f}"
            for key in ("mean", "median", "p90", "p95", "p99", "min", "max")
        )
    )
    print(
        f"wrote {profile}; draw it with `yoloq trt draw --layers LAYERS.json --profile {profile}`"
    )
    if args.json:
        write_text_atomic(args.json, json.dumps(result.to_dict(), indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _register_draw(commands) -> None:
    parser = commands.add_parser(
        "draw",
        help="draw an engine's layers (SVG or HTML)",
        description="Draw the engine graph from its layer JSON: one box per engine layer "
        "(fused layers are one box), filled by precision, reformat layers edged in red, "
        "each layer's time from --profile; headed by a summary (layers by precision, "
        "reformat count, time in reformats). Reads the JSON of TensorRT 8.6 to 11; needs "
        "neither TensorRT nor a GPU.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--layers", required=True, help="layer JSON (yoloq trt build, trtexec --exportLayerInfo)"
    )
    parser.add_argument("--profile", help="profile JSON (yoloq trt bench, trtexec --exportProfile)")
    parser.add_argument("--out", help="engine.svg or engine.html (default: beside --layers, .svg)")
    parser.add_argument("--title", help="heading (default: the layer file's name)")
    parser.set_defaults(func=run_draw)


def run_draw(args) -> int:
    layers = Path(args.layers)
    graph = load_engine_graph(layers, args.profile)
    stem = layers.name.removesuffix(".json").removesuffix(".layers").removesuffix(".graph")
    out = Path(args.out) if args.out else layers.with_name(f"{stem}.svg")
    draw_engine(graph, out, args.title or stem)
    for line in summarize(graph).lines():
        print(line)
    if graph.unmatched_profile:
        print(
            f"note: {len(graph.unmatched_profile)} profiled layers are not in {layers.name} "
            f"(e.g. {graph.unmatched_profile[0]!r}): is the profile of another engine?"
        )
    print(f"wrote {out}")
    return 0
