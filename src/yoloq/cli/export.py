"""`yoloq export`: ONNX of a quantized checkpoint (Q/DQ, its profile) or of a float model."""

from __future__ import annotations

import argparse
from pathlib import Path

from yoloq.errors import YoloqError
from yoloq.runtime.backends import load_predictor
from yoloq.workflows.steps import check_export

EPILOG = """examples:
  yoloq export --weights runs/ptq/ptq.pt --dynamic --out ptq.onnx
  yoloq export --weights demo --float --out demo_float.onnx
  yoloq export --weights yolov7.pt --float --img 640
  yoloq export --weights runs/ptq/ptq.pt --fp16 --dynamic --out ptq_fp16.onnx   # TensorRT 11
  yoloq export --weights demo --float --fp16 --out demo_fp16.onnx               # FP16 baseline

--fp16 writes the float parts in FP16 (everything outside Q/DQ; the whole model with
--float), as TensorRT 11's strongly typed builds need: they take each layer's precision
from the ONNX. Q/DQ models are then exported at opset 19 or newer (FP16 scales)."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="export a quantized (Q/DQ) or float model to ONNX",
        description="Export ONNX with input 'images' [batch, 3, H, W] (RGB, 0..1) and output "
        "'output' [batch, anchors, 5 + nc] (xywh in pixels, sigmoid scores). A quantized "
        "checkpoint exports with the profile it was calibrated for; ONNX Runtime's output is "
        "then compared with the torch model's.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True,
                        help="ptq.pt / qat.pt, or with --float any model yoloq loads")
    parser.add_argument("--float", dest="float_model", action="store_true",
                        help="export the float model (weights: .pt, architecture name, demo)")
    parser.add_argument("--profile", choices=("trt", "ort"),
                        help="check that the checkpoint was made for this profile")
    parser.add_argument("--dynamic", action="store_true",
                        help="dynamic batch, height and width (default: fixed, batch 1)")
    parser.add_argument("--opset", type=int, default=13, help="ONNX opset (>= 13)")
    parser.add_argument("--img", type=int, help="input size (default: the model's, else 640)")
    parser.add_argument("--fp16", action="store_true",
                        help="float parts in FP16; input and output stay FP32")
    parser.add_argument("--fp16-io", action="store_true",
                        help="with --fp16: the input and output in FP16 too")
    parser.add_argument("--out", help="output .onnx (default: next to the weights)")
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.fp16_io and not args.fp16:
        raise YoloqError("--fp16-io needs --fp16")
    predictor = load_predictor(args.weights)
    if predictor.model is None:
        raise YoloqError(f"{args.weights}: already exported ({predictor.backend}); export "
                         "takes a torch checkpoint")
    if predictor.precision == "int8" and args.float_model:
        raise YoloqError(f"{args.weights} is quantized; --float exports float models only")
    if predictor.precision == "fp32" and not args.float_model:
        raise YoloqError(f"{args.weights} is a float model: pass --float, or quantize it "
                         "first with `yoloq ptq`")
    if args.profile and predictor.profile != args.profile:
        raise YoloqError(f"{args.weights} was calibrated for the {predictor.profile} profile, "
                         f"not {args.profile}: Q/DQ placement differs between profiles, so "
                         f"rerun `yoloq ptq --profile {args.profile}`")
    out = Path(args.out) if args.out else default_output(args.weights, args.fp16)
    if out.is_dir():
        raise YoloqError(f"--out {out} is a folder; give the .onnx file to write")
    check = check_export(predictor, out, args.img or predictor.img_size, args.opset,
                         args.dynamic, fp16=args.fp16, fp16_io=args.fp16_io)
    versus = "FP16 ONNX Runtime vs FP32 torch" if args.fp16 else "ONNX Runtime vs torch"
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB); {versus}: {parity(check)}")
    return 0


def parity(check: dict) -> str:
    """check_export's errors in the output's own units: a float output's in pixels and
    absolute score, a quantized one's in steps of its grid too."""
    errors = (f"max error {check['max_box_error_px']:.3g} px on boxes, "
              f"{check['max_score_error']:.3g} on scores (absolute, scores are 0..1)")
    if check["output"] == "float":
        return f"float output, {errors}"
    return (f"quantized output (grid step {check['grid_step']:.3g}), max error "
            f"{check['max_error_steps']:.2f} steps of its grid; {errors}")


def default_output(weights: str, fp16: bool):
    """ptq.pt -> ptq.onnx (ptq_fp16.onnx with --fp16); demo -> demo.onnx."""
    path = Path(weights)
    stem = path.with_suffix("") if path.suffix else path
    return Path(f"{stem}{'_fp16' if fp16 else ''}.onnx")
