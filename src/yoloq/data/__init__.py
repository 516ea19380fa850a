"""Datasets in YOLO format: the data YAML, checked images and labels, letterbox, loaders."""

from yoloq.data.augment import AugmentConfig
from yoloq.data.config import DataConfig, load_data_config
from yoloq.data.dataset import (
    DataProblem,
    ImageRecord,
    ImageSet,
    label_path,
    list_images,
    load_images,
    load_split,
    parse_labels,
    read_label_file,
)
from yoloq.data.letterbox import ImageMeta, align_to_stride, letterbox, rect_batch_shapes
from yoloq.data.loaders import (
    Batch,
    LetterboxDataset,
    collate,
    create_calibration_loader,
    create_train_loader,
    create_val_loader,
)

__all__ = [
    "AugmentConfig",
    "Batch",
    "DataConfig",
    "DataProblem",
    "ImageMeta",
    "ImageRecord",
    "ImageSet",
    "LetterboxDataset",
    "align_to_stride",
    "collate",
    "create_calibration_loader",
    "create_train_loader",
    "create_val_loader",
    "label_path",
    "letterbox",
    "list_images",
    "load_data_config",
    "load_images",
    "load_split",
    "parse_labels",
    "read_label_file",
    "rect_batch_shapes",
]
