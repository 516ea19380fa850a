"""`yoloq qat`: quantization-aware fine-tuning of a PTQ model, with the float model as teacher."""

from __future__ import annotations

import argparse

from yoloq.cli.ptq import DATA_HELP, add_placement_options, given_ignores
from yoloq.errors import YoloqError
from yoloq.quant import PROFILES
from yoloq.report import print_report
from yoloq.workflows.config import CALIBRATION_CHOICES, QatConfig
from yoloq.workflows.qat import resume_qat, run_qat

EPILOG = """examples:
  yoloq qat --weights demo --data demo --epochs 2 --iters 20 --out runs/qat_demo
  yoloq qat --weights yolov7.pt --data coco.yaml --ptq runs/yolov7_ptq/ptq.pt --out runs/qat
  yoloq qat --resume runs/qat            # continue an interrupted run after its last epoch
  torchrun --nproc_per_node 4 -m yoloq qat --weights yolov7.pt --data coco.yaml \\
           --device cuda --out runs/qat  # DistributedDataParallel; rank 0 evaluates and saves

outputs (in --out): config.yaml, ptq.pt (when PTQ ran here), best.pt (best mAP) and last.pt
(quantized checkpoints, like ptq.pt), qat_<profile>.onnx and float.onnx, report.json and
report.md (float, PTQ and QAT side by side)."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "qat",
        help="fine-tune the quantized model against the float one (QAT)",
        description="Quantization-aware training: start from a PTQ model (--ptq, or PTQ runs "
        "first), train it to match the fused float model's outputs at every "
        "--supervision-stride-th layer (MSE; plus the detection loss with --loss det|both), "
        "with amax frozen and TensorRT's scale ties kept. Evaluates mAP after each epoch, "
        "keeps the best, exports ONNX at the end and writes the report. Mixed precision on "
        "CUDA; several GPUs under torchrun.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--weights", help="the float model (.pt, architecture name, 'demo'): "
                        "the teacher, and what PTQ quantizes when no --ptq is given")
    parser.add_argument("--data", help=DATA_HELP)
    parser.add_argument("--ptq", help="start from this ptq.pt, made from --weights (default: "
                        "run PTQ first); PTQ options given with it must match it")
    parser.add_argument("--out", help="output folder (default runs/qat)")
    parser.add_argument("--exist-ok", action="store_true", help="write into a non-empty --out")
    parser.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the interrupted run in DIR (its config.yaml, last.pt)",
    )
    parser.add_argument("--epochs", type=int, help="epochs (default 10)")
    parser.add_argument("--iters", type=int, help="batches per epoch (default 200)")
    parser.add_argument(
        "--lr-schedule",
        help="epoch:lr from that epoch on, comma-separated (default 0:1e-6,3:1e-5,8:1e-6)",
    )
    parser.add_argument("--optimizer", choices=("adam", "sgd"), help="default adam")
    parser.add_argument(
        "--supervision-stride",
        type=int,
        help="supervise every N-th layer's output (default 1: all)",
    )
    parser.add_argument(
        "--loss",
        choices=("supervision", "det", "both"),
        help="supervision: MSE to the teacher (default); det: detection loss "
        "on the labels; both: their sum",
    )
    parser.add_argument("--profile", choices=PROFILES, help="PTQ profile (default trt)")
    parser.add_argument("--method", choices=CALIBRATION_CHOICES,
                        help="PTQ calibration method (default mse; auto: best on select)")
    parser.add_argument("--calib-images", type=int, help="PTQ calibration images (256)")
    add_placement_options(parser, scope="PTQ: ")
    parser.add_argument("--batch", type=int, help="batch size per process (default 8)")
    parser.add_argument("--img", type=int, help="input size (default: the model's, else 640)")
    parser.add_argument("--val-images", type=int, help="evaluate on the first N val images")
    parser.add_argument("--device", help="cpu or cuda (default cpu; cuda:LOCAL_RANK in torchrun)")
    parser.add_argument("--workers", type=int, help="data loader processes (default 2)")
    parser.add_argument("--seed", type=int, help="data order and augmentation seed (default 0)")
    parser.add_argument("--trt", action="store_true", default=None,
                        help="also build TensorRT engines of the float model (FP16) and of the "
                        "best QAT model (INT8), evaluate and time them (report rows: mAP, "
                        "qps); needs the tensorrt extra and an NVIDIA GPU")
    parser.set_defaults(func=run)


# Command-line options that map one to one onto QatConfig fields.
_FIELDS = (
    "weights",
    "data",
    "ptq",
    "out",
    "epochs",
    "iters",
    "lr_schedule",
    "optimizer",
    "supervision_stride",
    "loss",
    "profile",
    "method",
    "calib_images",
    "weight_bits",
    "rules",
    "quantize_head",
    "int8_weights",
    "batch",
    "img",
    "val_images",
    "device",
    "workers",
    "seed",
    "trt",
)
# What a resumed run may change: where and how fast it runs, not what it computes.
_RESUME_FIELDS = ("device", "workers")


def given_settings(args) -> dict:
    """The QatConfig fields set on the command line (--ignore and --ignore-file as one)."""
    given = {name: getattr(args, name) for name in _FIELDS if getattr(args, name) is not None}
    ignore = given_ignores(args)
    if ignore:
        given["ignore"] = tuple(ignore)
    return given


def run(args) -> int:
    given = given_settings(args)
    if args.resume:
        changed = sorted(set(given) - set(_RESUME_FIELDS))
        if changed:
            raise YoloqError(f"--resume continues the saved config; drop --{changed[0]}")
        result = resume_qat(args.resume, **given)
    else:
        for required in ("weights", "data"):
            if required not in given:
                raise YoloqError(f"--{required} is required (or --resume DIR)")
        result = run_qat(QatConfig(**given), exist_ok=args.exist_ok)
    if result is not None:  # rank 0
        print_report(result.report)
        print(f"wrote {result.out}: best.pt, last.pt, {result.onnx.name}, report.json, report.md")
    return 0
