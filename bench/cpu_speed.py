"""CPU latency of yoloq's INT8 against float and against the peers, on ONNX Runtime and
OpenVINO: every row of a model interleaved in one process, so that its ratios are fair.

Rows, per model and batch size (ratios to ONNX Runtime float and to OpenVINO's default
float, which is bf16 on CPUs with BF16 or AMX):

    ort_float             ONNX Runtime, the float ONNX
    ort_yoloq             ONNX Runtime, yoloq's ort profile (int8 weights on disk), the
                          head's convolutions float (yoloq's default)
    ort_yoloq_head        the same with the head's convolutions quantized too
                          (`--quantize-head`)
    ort_quantize_static   ONNX Runtime, its own quantize_static (QDQ, per channel, U8S8),
                          its defaults: the head and the box decode quantized too (the
                          decode in int8 costs 20 to 60 points of mAP: see peers.py)
    ort_qs_head_float     quantize_static with the box decode and the head's convolutions
                          float: like for like with ort_yoloq
    ort_qs_decode_float   quantize_static with the box decode float: like for like with
                          ort_yoloq_head
    ov_f32                OpenVINO, the float ONNX with the f32 precision hint
    ov_bf16               OpenVINO, the float ONNX with the bf16 hint (CPUs with BF16 only)
    ov_yoloq              OpenVINO, yoloq's trt-profile ONNX (the same file TensorRT takes)
    ov_nncf               OpenVINO, NNCF's nncf.quantize of the OpenVINO float model

Speed only: demo and demo-v5 keep their trained weights; the full-size models have
random weights with random BatchNorm statistics; every tool calibrates on the same
smooth random images. yoloq's OpenVINO model must run every quantized convolution in
int8: the script stops, naming the model, where OpenVINO left one in float.

Needs the `openvino` extra, and `bench` (NNCF) for the ov_nncf row (skipped without it).
Results go to bench/results/cpu_speed.json after every model (`--resume` skips the
models it has) and to cpu_speed.md.

    python bench/cpu_speed.py                          # every model (about 20 min, 2 cores)
    python bench/cpu_speed.py --models demo --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import tempfile
from pathlib import Path

import openvino as ov
from _common import RESULTS, calibration_images, cpu_flags, machine, random_detector
from _peers_tools import decode_nodes, head_convs, ort_quantize_static

from yoloq.export import export_detector
from yoloq.models import load_model
from yoloq.models.quantized import quantize_yolo
from yoloq.quant import calibrate
from yoloq.runtime.bench import Runner, onnx_runner, time_runners
from yoloq.runtime.openvino import (
    OpenVinoModel,
    check_int8,
    default_float_precision,
    openvino_runner,
    shared_core,
)

DEMO_MODELS = {"demo": 320, "demo-v5": 320}  # trained on the synthetic set, at 320 px
MODELS = ("demo", "demo-v5", "yolov7-tiny", "yolov5s", "yolov7")


def build_files(name: str, img: int, calib: int, folder: Path) -> dict[str, Path]:
    """Every file the rows run: float, yoloq ort and trt profiles, quantize_static, NNCF."""
    model = load_model(name).fuse().eval() if name in DEMO_MODELS else random_detector(name)
    images = calibration_images(calib, img)
    files = {"float": export_detector(model, folder / f"{name}_float.onnx", img)}
    # 8-bit weights where the CPU has VNNI (no u8s8 saturation there), else 7-bit.
    bits = 8 if {"avx512_vnni", "avx_vnni"} & set(cpu_flags()) else 7
    for key, profile, weight_bits, head in (("yoloq_ort", "ort", bits, True),
                                            ("yoloq_ort_head", "ort", bits, False),
                                            ("yoloq_trt", "trt", 8, True)):
        quantized, *_ = quantize_yolo(copy.deepcopy(model), profile, weight_bits,
                                      keep_head_float=head)
        calibrate(quantized, images, method="max", show_progress=False)
        files[key] = export_detector(quantized, folder / f"{name}_{key}.onnx", img,
                                     int8_weights=True)
    singles = [x[:1] for x in images]
    decode = decode_nodes(files["float"])
    for key, exclude in (("quantize_static", []), ("qs_decode_float", decode),
                         ("qs_head_float", decode + head_convs(files["float"]))):
        files[key] = ort_quantize_static(files["float"], folder / f"{name}_{key}.onnx",
                                         singles, exclude=exclude)
    if importlib.util.find_spec("nncf") is not None:
        files["nncf"] = nncf_openvino(files["float"], folder / f"{name}_nncf.xml", images)
    return files


def nncf_openvino(float_onnx: Path, out: Path, batches) -> Path:
    """`nncf.quantize` on the OpenVINO model read from the float ONNX (its defaults: the
    performance preset, symmetric int8), one image per calibration item."""
    import nncf

    singles = [x[i : i + 1].numpy() for x in batches for i in range(len(x))]
    dataset = nncf.Dataset(singles)
    quantized = nncf.quantize(shared_core().read_model(str(float_onnx)), dataset,
                              subset_size=len(singles))
    ov.save_model(quantized, str(out))
    return out


def runners_for(files: dict[str, Path], batches, img: int, bf16: bool):
    """(label, Runner) of every row; yoloq's OpenVINO model checked for int8 first."""
    rows = [("ort_float", onnx_runner(files["float"], batches, img_size=img)),
            ("ort_yoloq", onnx_runner(files["yoloq_ort"], batches, img_size=img)),
            ("ort_yoloq_head", onnx_runner(files["yoloq_ort_head"], batches, img_size=img)),
            ("ort_quantize_static", onnx_runner(files["quantize_static"], batches, img_size=img)),
            ("ort_qs_head_float", onnx_runner(files["qs_head_float"], batches, img_size=img)),
            ("ort_qs_decode_float", onnx_runner(files["qs_decode_float"], batches,
                                                img_size=img))]
    openvino = {"ov_f32": (files["float"], "f32"), "ov_default": (files["float"], "default")}
    if bf16:
        openvino["ov_bf16"] = (files["float"], "bf16")
    openvino["ov_yoloq"] = (files["yoloq_trt"], "default")
    if "nncf" in files:
        openvino["ov_nncf"] = (files["nncf"], "default")
    notes = {}
    for label, (path, precision) in openvino.items():
        model = OpenVinoModel(path, precision)
        runner, shapes = openvino_runner(model, batches, img)
        notes[label] = {"precision": model.precision_hint(shapes[batches[0]]),
                        "convolutions": check_int8(model, shapes[batches[0]])}
        rows.append((label, runner))
    # Several rows run the same file: each runner is known by its row's label.
    return [(label, Runner(label, runner.run)) for label, runner in rows], notes


def bench_model(name: str, args, folder: Path) -> dict:
    img = args.img or DEMO_MODELS.get(name, 640)
    files = build_files(name, img, args.calib_images, folder)
    bf16 = bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags()))
    rows, notes = runners_for(files, args.batches, img, bf16)
    labels = [label for label, _ in rows]
    result = {"img_size": img, "rows": {label: {} for label in labels}, "openvino": notes,
              "file_mb": {key: round(size_mb(path), 2) for key, path in files.items()}}
    for batch in args.batches:
        iters = args.iters if batch == 1 else max(5, args.iters // 4)
        timed = time_runners([runner for _, runner in rows], (batch,), args.warmup, iters)
        medians = {label: timed.get(runner.name, batch).median_ms for label, runner in rows}
        for label, runner in rows:
            stats = timed.get(runner.name, batch)
            result["rows"][label][str(batch)] = {
                "median_ms": round(stats.median_ms, 2), "p90_ms": round(stats.p90_ms, 2),
                "runs": len(stats.latencies_ms),
                "x_ort_float": round(stats.median_ms / medians["ort_float"], 3),
                "x_ov_float": round(stats.median_ms / medians["ov_default"], 3)}
        print(f"{name} b{batch}: " + ", ".join(
            f"{label} {medians[label]:.1f} ms ({medians[label] / medians['ort_float']:.2f}x)"
            for label in labels), flush=True)
    return result


def size_mb(path: Path) -> float:
    """An ONNX file, or an OpenVINO IR with its weights (.xml and .bin)."""
    extra = path.with_suffix(".bin") if path.suffix == ".xml" else None
    return (path.stat().st_size + (extra.stat().st_size if extra else 0)) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--img", type=int, help="default: 320 for the demo models, else 640")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=30, help="at batch 1; a quarter at 8")
    parser.add_argument("--calib-images", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="3 runs per row: a smoke run")
    parser.add_argument("--resume", action="store_true", help="keep the models already done")
    parser.add_argument("--out", default=str(RESULTS / "cpu_speed.json"))
    args = parser.parse_args()
    args.batches = tuple(int(b) for b in args.batches.split(","))
    if args.quick:
        args.warmup, args.iters, args.calib_images = 1, 3, 2
    out = Path(args.out)
    data = json.loads(out.read_text()) if args.resume and out.is_file() else {}
    data.update(benchmark="cpu_speed", machine=machine(), versions=versions())
    data.setdefault("models", {})
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            if name in data["models"]:
                continue
            data["models"][name] = bench_model(name, args, Path(folder))
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(data, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(data))
    print(markdown(data))
    print(f"wrote {out} and {out.with_suffix('.md')}")


def versions() -> dict:
    import onnxruntime

    nncf = importlib.util.find_spec("nncf")
    nncf_version = __import__("nncf").__version__ if nncf else None
    return {"onnxruntime": onnxruntime.__version__, "openvino": ov.get_version(),
            "nncf": nncf_version,
            "ov_default_precision": default_float_precision()}


def markdown(data: dict) -> str:
    machine_info = data["machine"]
    lines = [f"CPU: {machine_info['processor']}, {machine_info['cpu_count']} cores, flags "
             f"{', '.join(machine_info['cpu_flags'])}; " + ", ".join(
                 f"{k} {v}" for k, v in data["versions"].items() if v), ""]
    labels = ["ort_float", "ort_yoloq", "ort_qs_head_float", "ort_yoloq_head",
              "ort_qs_decode_float", "ort_quantize_static", "ov_f32", "ov_bf16",
              "ov_default", "ov_yoloq", "ov_nncf"]
    lines.append("| model | batch | " + " | ".join(labels) + " |")
    lines.append("|---|---:|" + "---:|" * len(labels))
    for name, model in data["models"].items():
        for batch in next(iter(model["rows"].values())):
            cells = []
            for label in labels:
                row = model["rows"].get(label, {}).get(batch)
                cells.append("" if row is None else
                             f"{row['median_ms']:.1f} ms ({row['x_ort_float']:.2f}x, "
                             f"{row['x_ov_float']:.2f}x ov)")
            lines.append(f"| {name} ({model['img_size']} px) | {batch} | " + " | ".join(cells)
                         + " |")
    lines += ["", "Ratios: to ONNX Runtime float, and (ov) to OpenVINO's default float.", "",
              "| model | float ONNX MB | yoloq ort MB | yoloq trt MB | quantize_static MB |"
              " yoloq ort / float |", "|---|---:|---:|---:|---:|---:|"]
    for name, model in data["models"].items():
        sizes = model["file_mb"]
        lines.append(f"| {name} | {sizes['float']} | {sizes['yoloq_ort']} | "
                     f"{sizes['yoloq_trt']} | {sizes['quantize_static']} | "
                     f"{sizes['yoloq_ort'] / sizes['float']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
