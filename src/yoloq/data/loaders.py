"""Batches for the model, and the loaders that make them: validation (rectangular
batches), calibration (a seeded subset) and training (augmented, shuffled, seeded).

A batch holds `images` float [B, 3, H, W] RGB in 0..1, `targets` [n, 6] (image index
in the batch, class, x, y, w, h normalised to the letterboxed image) and `metas`,
one `ImageMeta` per image to map predictions back to the original pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from yoloq.data.augment import (
    AugmentConfig,
    augment_hsv,
    boxes_after_letterbox,
    flip_lr,
    random_offset,
)
from yoloq.data.dataset import ImageRecord, ImageSet
from yoloq.data.letterbox import (
    ImageMeta,
    align_to_stride,
    fit_scale,
    letterbox,
    load_rgb,
    rect_batch_shapes,
)
from yoloq.errors import YoloqError


class Batch(NamedTuple):
    images: torch.Tensor  # float [B, 3, H, W], RGB, 0..1
    targets: torch.Tensor  # [n, 6]: image index, class, x, y, w, h (normalised)
    metas: list[ImageMeta]


class Sample(NamedTuple):
    image: torch.Tensor  # uint8 [3, H, W]
    labels: torch.Tensor  # [n, 5]: class, x, y, w, h normalised to the letterboxed image
    meta: ImageMeta


class LetterboxDataset(Dataset):
    """Letterboxed images of `records`; `shapes[i]` is the (h, w) canvas of image i.

    With `augment`, image i draws its augmentation from a generator seeded by
    (seed, epoch, i), so a run is reproducible whatever the worker count.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        names: Sequence[str],
        img_size: int,
        shapes: Sequence[tuple[int, int]],
        augment: AugmentConfig | None = None,
        seed: int = 0,
    ):
        self.records, self.names, self.img_size = list(records), tuple(names), img_size
        self.shapes = [tuple(int(v) for v in shape) for shape in shapes]
        self.augment, self.seed, self.epoch = augment, seed, 0
        self.role: str | None = None  # the ImageSet's (yoloq.data.splits)

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Draw new augmentations for a new epoch."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> Sample:
        record, shape = self.records[index], self.shapes[index]
        image = load_rgb(record.path)
        if image.size != (record.width, record.height):
            raise YoloqError(f"{record.path}: image changed since it was scanned; run again")
        scale = fit_scale(record.width, record.height, self.img_size)
        if self.augment is None:
            array, ratio, pad = letterbox(image, shape, scale)
            labels = boxes_after_letterbox(record.labels, image.size, ratio, pad, shape[::-1])
        else:
            array, labels, ratio, pad = self._augmented(index, image, record, shape, scale)
        meta = ImageMeta(record.path, (record.height, record.width), ratio, pad, record.labels)
        tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
        return Sample(tensor, torch.from_numpy(labels.astype(np.float32)), meta)

    def _augmented(self, index: int, image, record: ImageRecord, shape, scale):
        rng = np.random.default_rng([self.seed, self.epoch, index])
        config = self.augment
        scale *= rng.uniform(1 - config.scale, 1 + config.scale)
        new_wh = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        offset = random_offset(new_wh, shape[::-1], rng)
        array, ratio, pad = letterbox(image, shape, scale, offset)
        labels = boxes_after_letterbox(record.labels, image.size, ratio, pad, shape[::-1])
        if config.hsv_h or config.hsv_s or config.hsv_v:
            array = augment_hsv(array, config, rng)
        if rng.random() < config.flip_lr:
            array, labels = flip_lr(array, labels)
        return array, labels, ratio, pad


def collate(samples: Sequence[Sample]) -> Batch:
    """Stack samples into a `Batch` (images as float 0..1)."""
    images = torch.stack([sample.image for sample in samples]).float().div_(255)
    targets = [
        torch.cat([torch.full((len(s.labels), 1), float(i)), s.labels], dim=1)
        for i, s in enumerate(samples)
    ]
    return Batch(images, torch.cat(targets).reshape(-1, 6), [s.meta for s in samples])


def create_val_loader(
    image_set: ImageSet,
    img_size: int = 640,
    batch_size: int = 16,
    stride: int = 32,
    rect: bool = True,
    pad: float = 0.5,
    workers: int = 0,
) -> DataLoader:
    """Validation batches in aspect-ratio order, each padded to its own shape (rect).

    The loader's dataset holds the records in batch order (`loader.dataset.records`).
    """
    require_images(image_set, "evaluate on")
    img_size = align_to_stride(img_size, stride)
    records = list(image_set.records)
    if rect and records:
        records.sort(key=lambda r: r.height / r.width)
        sizes = np.array([[r.width, r.height] for r in records], dtype=np.float64)
        per_batch = rect_batch_shapes(sizes, batch_size, img_size, stride, pad)
        shapes = [tuple(per_batch[i // batch_size]) for i in range(len(records))]
    else:
        shapes = [(img_size, img_size)] * len(records)
    dataset = LetterboxDataset(records, image_set.names, img_size, shapes)
    dataset.role = image_set.role  # select or report: what a choice may look at
    return _loader(dataset, batch_size, workers, shuffle=False)


def create_calibration_loader(
    image_set: ImageSet,
    num_images: int,
    img_size: int = 640,
    batch_size: int = 16,
    stride: int = 32,
    seed: int = 0,
    workers: int = 0,
) -> DataLoader:
    """Batches of `num_images` images drawn without replacement with a seeded generator,
    letterboxed to the square `img_size` the deployed model will see."""
    if num_images <= 0:
        raise YoloqError(f"number of calibration images must be positive, not {num_images}")
    require_images(image_set, "calibrate on")
    img_size = align_to_stride(img_size, stride)
    count = min(num_images, len(image_set.records))
    chosen = np.random.default_rng(seed).choice(len(image_set.records), count, replace=False)
    records = [image_set.records[i] for i in chosen]
    dataset = LetterboxDataset(records, image_set.names, img_size, [(img_size, img_size)] * count)
    return _loader(dataset, batch_size, workers, shuffle=False)


def create_train_loader(
    image_set: ImageSet,
    img_size: int = 640,
    batch_size: int = 16,
    stride: int = 32,
    augment: AugmentConfig | None = None,
    seed: int = 0,
    workers: int = 0,
) -> DataLoader:
    """Shuffled, augmented square batches; the order and augmentations follow `seed`
    (call `loader.dataset.set_epoch(e)` for new augmentations each epoch)."""
    require_images(image_set, "train on")
    img_size = align_to_stride(img_size, stride)
    shapes = [(img_size, img_size)] * len(image_set.records)
    dataset = LetterboxDataset(
        image_set.records, image_set.names, img_size, shapes, augment or AugmentConfig(), seed
    )
    generator = torch.Generator().manual_seed(seed)
    return _loader(dataset, batch_size, workers, shuffle=True, generator=generator)


def require_images(image_set: ImageSet, purpose: str) -> None:
    """Refuse an empty image set: evaluating nothing gives a meaningless mAP, and
    calibrating or training on nothing leaves the model as it was, both silently."""
    if image_set.records:
        return
    where = ", ".join(map(str, image_set.sources)) or "the image set"
    dropped = f": {image_set.drop_summary()}" if image_set.dropped_images else ""
    raise YoloqError(f"{where}: no images to {purpose}{dropped}")


def _loader(dataset, batch_size, workers, shuffle, generator=None) -> DataLoader:
    if batch_size <= 0:
        raise YoloqError(f"batch size must be positive, not {batch_size}")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=max(0, workers),
        collate_fn=collate,
        generator=generator,
        persistent_workers=False,
    )
