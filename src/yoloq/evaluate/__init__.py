"""Evaluation: NMS, mapping back to original pixels, COCO mAP with pycocotools."""

from yoloq.evaluate.boxes import to_original, xywh_to_xyxy, xyxy_to_xywh, yolo_to_coco_boxes
from yoloq.evaluate.coco import COCO80_TO_COCO91, CocoEvaluator, CocoMetrics, image_id_from_path
from yoloq.evaluate.evaluation import EvalResult, evaluate
from yoloq.evaluate.nms import non_max_suppression
from yoloq.evaluate.report import print_eval_result

__all__ = [
    "COCO80_TO_COCO91",
    "CocoEvaluator",
    "CocoMetrics",
    "EvalResult",
    "evaluate",
    "image_id_from_path",
    "non_max_suppression",
    "print_eval_result",
    "to_original",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
    "yolo_to_coco_boxes",
]
