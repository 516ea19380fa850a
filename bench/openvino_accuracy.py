"""OpenVINO's accuracy: the same ONNX on OpenVINO and ONNX Runtime, and yoloq's INT8
against NNCF's OpenVINO INT8 (the peer OpenVINO users pick).

For each demo model, on the report split, 256 calibration images from train:

    float / ort            the float ONNX on ONNX Runtime: every drop's reference
    float / ov f32         the same file on OpenVINO, f32 precision hint
    yoloq trt / ort        yoloq PTQ, trt profile, head float, MSE (`yoloq ptq`'s defaults)
    yoloq trt / ov         the same file on OpenVINO (default hint: float layers in bf16
                           on CPUs with BF16)
    nncf head float / ov   `nncf.quantize` on OpenVINO's model of the float ONNX, defaults,
                           the head's convolutions in its ignored scope (like for like)
    nncf / ov              the same with NNCF's defaults alone (the head quantized too)

Each row: mAP@.5:.95, its drop below float / ort with the paired bootstrap 95% interval,
and how many convolutions OpenVINO ran in int8. Each file run by both runtimes gets the
paired interval of OpenVINO minus ONNX Runtime (target: within 0.1 points), and NNCF's
rows the interval of their drop minus yoloq's on OpenVINO. JSON and Markdown to
bench/results/openvino_accuracy{_Nimages}.*, written after every row.

    python bench/openvino_accuracy.py                  # both models, the whole report split
    python bench/openvino_accuracy.py --images 500 --models demo
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch
from _common import RESULTS, machine, write_json
from _peers_tools import head_convs

from yoloq.evaluate.bootstrap import paired_bootstrap
from yoloq.export import detector_metadata, export_detector
from yoloq.runtime.openvino import OpenVinoModel, convolution_precisions, shared_core
from yoloq.runtime.ort import OrtModel
from yoloq.runtime.predictor import export_metadata, exported_predictor
from yoloq.workflows.config import PtqConfig
from yoloq.workflows.steps import evaluate_predictor, prepare, quantize_and_calibrate

MODELS = ("demo", "demo-v5")
REFERENCE = "float / ort"
SAME_FILE = {"float / ov f32": "float / ort", "yoloq trt / ov": "yoloq trt / ort"}
VERSUS_YOLOQ = {"nncf head float / ov": "yoloq trt / ov", "nncf / ov": "yoloq trt / ov"}


def build_files(space, config: PtqConfig, folder: Path) -> dict[str, Path]:
    """The float ONNX, yoloq's trt-profile ONNX, and NNCF's two OpenVINO models."""
    def metadata(precision, profile):
        return detector_metadata(space.names, space.img_size, space.stride, precision, profile)

    float_onnx = export_detector(space.float_model, folder / "float.onnx", space.img_size,
                                 metadata=metadata("fp32", None))
    model, *_ = quantize_and_calibrate(space, config, show=False)
    files = {"float": float_onnx, "yoloq_trt": export_detector(
        model, folder / "yoloq_trt.onnx", space.img_size, metadata=metadata("int8", "trt"))}
    batches = [batch[0] for batch in space.calib_loader]
    head = head_convs(float_onnx)
    files["nncf_head_float"] = nncf_openvino(float_onnx, folder / "nncf_head_float.xml",
                                             batches, ignored=head)
    files["nncf"] = nncf_openvino(float_onnx, folder / "nncf.xml", batches)
    return files


def nncf_openvino(float_onnx: Path, out: Path, batches, ignored: list[str] = ()) -> Path:
    """`nncf.quantize` on OpenVINO's model of the float ONNX (performance preset,
    symmetric int8), one image per calibration item; `ignored`: ONNX node names kept float
    (OpenVINO names its operations after them)."""
    import nncf
    import openvino as ov

    nncf.set_log_level(logging.WARNING)
    singles = [x[i : i + 1].numpy() for x in batches for i in range(len(x))]
    scope = nncf.IgnoredScope(names=list(ignored), validate=True) if ignored else None
    quantized = nncf.quantize(shared_core().read_model(str(float_onnx)), nncf.Dataset(singles),
                              subset_size=len(singles), ignored_scope=scope)
    ov.save_model(quantized, str(out))
    return out


def predictors(files: dict[str, Path]) -> dict[str, tuple]:
    """Row -> (predictor, OpenVINO model or None); NNCF's IR carries no class names, so
    its predictor reads them from the float ONNX."""
    meta = export_metadata(files["float"])
    rows = {}
    for row, (key, runtime, precision) in {
        "float / ort": ("float", "ort", None), "float / ov f32": ("float", "ov", "f32"),
        "yoloq trt / ort": ("yoloq_trt", "ort", None),
        "yoloq trt / ov": ("yoloq_trt", "ov", "default"),
        "nncf head float / ov": ("nncf_head_float", "ov", "default"),
        "nncf / ov": ("nncf", "ov", "default"),
    }.items():
        path = files[key]
        model = OrtModel(path) if runtime == "ort" else OpenVinoModel(path, precision)
        backend = "onnxruntime" if runtime == "ort" else "openvino"
        file_meta = export_metadata(path) if path.suffix == ".onnx" else meta
        rows[row] = (exported_predictor(model, file_meta, path, backend),
                     model if runtime == "ov" else None)
    return rows


def bench_model(name: str, args, folder: Path, save) -> dict:
    config = PtqConfig(weights=name, data="demo", out=str(folder), calib_images=256,
                       val_images=args.images, batch=8, method="mse")
    space = prepare(config)
    files = build_files(space, config, folder)
    result = {"splits": space.splits, "rows": {}}
    evals = {}
    for row, (predictor, ov_model) in predictors(files).items():
        started = time.perf_counter()
        evals[row] = evaluate_predictor(predictor, space)
        fields = {"map50_95": round(evals[row].map50_95, 3),
                  "seconds": round(time.perf_counter() - started, 1)}
        if ov_model is not None:
            shape = (1, 3, space.img_size, space.img_size)
            fields["convolutions"] = dict(convolution_precisions(ov_model.compiled(shape)))
        if row != REFERENCE:
            fields["drop"] = interval(evals[REFERENCE], evals[row], args.resamples)
        for pairs, label in ((SAME_FILE, "vs_onnxruntime"), (VERSUS_YOLOQ, "vs_yoloq")):
            if row in pairs:  # this row's mAP minus the other's, as a drop of theirs
                fields[label] = interval(evals[pairs[row]], evals[row], args.resamples)
        result["rows"][row] = fields
        print(f"{name} {row}: {fields}", flush=True)
        save(name, result)
    return result


def interval(baseline, row, resamples: int) -> dict:
    """mAP@.5:.95 of `baseline` minus `row`'s, with its paired bootstrap 95% interval."""
    drop = paired_bootstrap(baseline.matches, row.matches, resamples, by_area=False).map50_95
    return {"value": round(drop.drop, 3), "interval": [round(v, 3) for v in drop.drop_interval]}


def markdown(data: dict) -> str:
    lines = ["| model | row | mAP@.5:.95 | drop [95% CI] | OpenVINO - ORT [95% CI] | "
             "vs yoloq [95% CI] | int8 convs |", "|---|---|---:|---:|---:|---:|---:|"]

    def cell(entry):
        if not entry:
            return ""
        low, high = entry["interval"]
        return f"{entry['value']:.2f} [{low:.2f}, {high:.2f}]"

    for name, section in data["models"].items():
        for row, fields in section["rows"].items():
            convs = fields.get("convolutions") or {}
            int8 = sum(count for precision, count in convs.items() if precision in ("i8", "u8"))
            # vs_onnxruntime holds ORT minus OpenVINO: shown as OpenVINO minus ORT.
            same = fields.get("vs_onnxruntime")
            same = same and {"value": -same["value"],
                             "interval": [-same["interval"][1], -same["interval"][0]]}
            lines.append(f"| {name} | {row} | {fields['map50_95']:.2f} | "
                         f"{cell(fields.get('drop'))} | {cell(same)} | "
                         f"{cell(fields.get('vs_yoloq'))} | "
                         f"{f'{int8}/{sum(convs.values())}' if convs else ''} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--images", type=int, default=None,
                        help="report images (default: all); other counts write their own files")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    suffix = "" if args.images is None else f"_{args.images}images"
    path = RESULTS / f"openvino_accuracy{suffix}.json"
    data = {"machine": machine(), "models": {}}
    torch.manual_seed(0)

    def save(name, result):
        data["models"][name] = result
        write_json(path.name, data)
        path.with_suffix(".md").write_text(markdown(data))

    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            (Path(folder) / name).mkdir()
            bench_model(name, args, Path(folder) / name, save)
    print(markdown(data))
    print(f"wrote {path} and {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
