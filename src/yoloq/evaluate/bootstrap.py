"""Paired bootstrap intervals of mAP, from COCOeval's per-image matches.

COCOeval matches each image's detections to its ground truth once; the average
precision of any multiset of images then follows from those matches alone. A bootstrap
resample draws the images with replacement, so it weights each image by how often it
was drawn: the ranked detections' true and false positives are summed with those
weights, and the interpolated precision is read at COCO's 101 recall points, as
COCOeval's `accumulate` reads it. With every weight 1 this is COCOeval's own number.

Paired: the float and the INT8 evaluation of the same images share every resample, so
the interval of their difference leaves out the images' own variance (most of it).

Example:
    intervals = paired_bootstrap(float_eval.matches, int8_eval.matches, resamples=1000)
    intervals.map50_95.drop, intervals.map50_95.drop_interval  # fractions
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from yoloq.errors import YoloqError

AREAS = ("all", "small", "medium", "large")  # COCOeval's default area ranges, in order
# COCOeval's recall points, bit for bit (numpy's linspace): a recall that equals one exactly
# must fall on the same side of it.
RECALL_POINTS = torch.from_numpy(np.linspace(0.0, 1.0, 101))
# Resamples evaluated together: bounds the (resamples x detections) temporaries.
CHUNK = 64


@dataclass(frozen=True)
class ClassMatches:
    """One class in one area range, its detections in COCOeval's rank order.

    image [D]: the image of each detection; tp [T, D]: matched at IoU threshold t and
    not ignored; counted [T, D]: not ignored (a true or a false positive);
    ground_truth [I]: each image's ground truth that is not ignored.
    """

    image: np.ndarray
    tp: np.ndarray
    counted: np.ndarray
    ground_truth: np.ndarray


@dataclass(frozen=True)
class Matches:
    """Everything the bootstrap needs of one COCO evaluation: classes[area][class]."""

    images: int
    thresholds: int
    classes: tuple[tuple[ClassMatches, ...], ...]


def matches_from_cocoeval(coco_eval) -> Matches:
    """The per-image matches of a COCOeval after `evaluate()`, ranked as `accumulate`
    ranks them (per image by score, then all images by score, stably)."""
    params = coco_eval.params
    images, areas = len(params.imgIds), len(params.areaRng)
    if areas != len(AREAS):
        raise YoloqError("the bootstrap expects COCOeval's four default area ranges")
    max_det = params.maxDets[-1]
    thresholds = len(params.iouThrs)
    classes = []
    for a in range(areas):
        row = []
        for k in range(len(params.catIds)):
            start = k * areas * images + a * images
            row.append(_class_matches(coco_eval.evalImgs[start:start + images], max_det,
                                      thresholds))
        classes.append(tuple(row))
    return Matches(images, thresholds, tuple(classes))


def _class_matches(entries, max_det: int, thresholds: int) -> ClassMatches:
    ground_truth = np.zeros(len(entries), dtype=np.float64)
    image, scores, tp, counted = [], [], [], []
    for index, entry in enumerate(entries):
        if entry is None:
            continue
        ground_truth[index] = np.count_nonzero(np.asarray(entry["gtIgnore"]) == 0)
        found = len(entry["dtScores"][:max_det])
        if not found:
            continue
        ignored = np.asarray(entry["dtIgnore"])[:, :max_det].astype(bool)
        matched = np.asarray(entry["dtMatches"])[:, :max_det] > 0
        image.append(np.full(found, index))
        scores.append(np.asarray(entry["dtScores"][:max_det], dtype=np.float64))
        tp.append(matched & ~ignored)
        counted.append(~ignored)
    if not scores:
        empty = np.zeros((thresholds, 0), dtype=bool)
        return ClassMatches(np.zeros(0, dtype=np.int64), empty, empty, ground_truth)
    order = np.argsort(-np.concatenate(scores), kind="mergesort")
    image = np.concatenate(image)[order]
    tp = np.concatenate(tp, axis=1)[:, order]
    counted = np.concatenate(counted, axis=1)[:, order]
    # Detections ranked below every true positive change no precision that is read.
    hits = np.flatnonzero(tp.any(axis=0))
    keep = hits[-1] + 1 if len(hits) else 0
    return ClassMatches(image[:keep], tp[:, :keep], counted[:, :keep], ground_truth)


def class_ap(matches: ClassMatches, weights: torch.Tensor) -> torch.Tensor:
    """AP [R, T] of one class for R image weightings [R, I]; nan where a weighting
    leaves the class no ground truth (COCOeval's -1)."""
    positives = weights @ torch.from_numpy(matches.ground_truth)  # [R]
    thresholds = matches.tp.shape[0]
    ap = torch.zeros(len(weights), thresholds, dtype=torch.float64)
    if matches.image.size:
        weight = weights[:, torch.from_numpy(matches.image)]  # [R, D]
        counted = torch.from_numpy(matches.counted)
        same_counts = bool(counted.all())
        ranked = weight.cumsum(1) if same_counts else None
        for t in range(thresholds):
            if not same_counts:
                ranked = (weight * counted[t]).cumsum(1)
            ap[:, t] = _threshold_ap(weight, ranked, torch.from_numpy(matches.tp[t]), positives)
    return torch.where(positives[:, None] > 0, ap, torch.nan)


def _threshold_ap(weight, ranked, tp, positives) -> torch.Tensor:
    """COCO's 101-point interpolated AP at one IoU threshold, read at the true positives
    only: a false positive's precision is below that of the true positive before it,
    and recall only grows at a true positive, so no other position is ever read."""
    hits = torch.nonzero(tp).flatten()
    if not len(hits):
        return torch.zeros(len(weight), dtype=torch.float64)
    found = weight[:, hits].cumsum(1)  # [R, H]
    precision = found / (ranked[:, hits] + np.spacing(1))
    recall = found / positives.clamp(min=1e-12)[:, None]
    # The interpolated precision: the best precision at this recall or beyond.
    envelope = precision.flip(1).cummax(1).values.flip(1)
    points = RECALL_POINTS.expand(len(weight), -1).contiguous()
    index = torch.searchsorted(recall.contiguous(), points, side="left")
    read = envelope.gather(1, index.clamp(max=hits.numel() - 1))
    return torch.where(index < hits.numel(), read, 0.0).mean(1)


@dataclass(frozen=True)
class Interval:
    """A paired comparison of one metric: values of A and B (fractions), their
    difference A - B, and bootstrap 95% intervals of each."""

    a: float
    b: float
    a_interval: tuple[float, float]
    b_interval: tuple[float, float]
    drop_interval: tuple[float, float]

    @property
    def drop(self) -> float:
        return self.a - self.b

    @property
    def significant(self) -> bool:
        """Whether the interval of the difference excludes 0."""
        low, high = self.drop_interval
        return low > 0 or high < 0

    def to_dict(self) -> dict:
        return {"a": _json(self.a), "b": _json(self.b), "drop": _json(self.drop),
                "a_interval": [_json(v) for v in self.a_interval],
                "b_interval": [_json(v) for v in self.b_interval],
                "drop_interval": [_json(v) for v in self.drop_interval]}


@dataclass(frozen=True)
class PairedIntervals:
    """mAP@.5:.95, mAP@.5, AP per class and AP of small, medium and large objects."""

    map50_95: Interval
    map50: Interval
    per_class: tuple[Interval, ...]
    by_area: dict[str, Interval]
    resamples: int
    seed: int

    def to_dict(self, names=None) -> dict:
        names = names or [str(k) for k in range(len(self.per_class))]
        return {"resamples": self.resamples, "seed": self.seed,
                "map50_95": self.map50_95.to_dict(), "map50": self.map50.to_dict(),
                "per_class": {n: i.to_dict() for n, i in zip(names, self.per_class, strict=True)},
                "by_area": {area: i.to_dict() for area, i in self.by_area.items()}}


def paired_bootstrap(a: Matches, b: Matches, resamples: int = 1000, seed: int = 0,
                     level: float = 0.95, images: np.ndarray | None = None,
                     by_area: bool = True) -> PairedIntervals:
    """Bootstrap intervals of A's and B's metrics and of A - B, over the same resampled
    images for both. Metrics are fractions; the point values are unresampled.

    `images` (indices, repeats allowed) evaluates a sample of the evaluated images
    instead of all of them: the point values are the sample's, and resamples draw from it.
    `by_area=False` leaves out small / medium / large (a third of the cost each).
    """
    if a.images != b.images or len(a.classes[0]) != len(b.classes[0]):
        raise YoloqError(f"a paired bootstrap needs the same images and classes: {a.images} "
                         f"and {b.images} images")
    sample = torch.arange(a.images) if images is None else torch.as_tensor(images).long()
    generator = torch.Generator().manual_seed(seed)
    draws = sample[torch.randint(len(sample), (resamples, len(sample)), generator=generator)]
    draws = torch.cat([sample[None], draws])  # row 0: the sample itself
    weights = torch.zeros(resamples + 1, a.images, dtype=torch.float64)
    weights.scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))
    per_class_a, per_class_b = (_class_aps(m, 0, weights) for m in (a, b))  # [R+1, T, K]

    def compare(metric_a: torch.Tensor, metric_b: torch.Tensor) -> Interval:
        return _interval(metric_a, metric_b, level)

    map_a, map_b = (torch.nanmean(ap.mean(1), dim=1) for ap in (per_class_a, per_class_b))
    ap50_a, ap50_b = (torch.nanmean(ap[:, 0], dim=1) for ap in (per_class_a, per_class_b))
    per_class = tuple(compare(per_class_a[:, :, k].mean(1), per_class_b[:, :, k].mean(1))
                      for k in range(per_class_a.shape[2]))
    areas = {}
    for index, area in enumerate(AREAS[1:] if by_area else (), start=1):
        area_a, area_b = (torch.nanmean(_class_aps(m, index, weights).mean(1), dim=1)
                          for m in (a, b))
        areas[area] = compare(area_a, area_b)
    return PairedIntervals(compare(map_a, map_b), compare(ap50_a, ap50_b), per_class,
                           areas, resamples, seed)


def _class_aps(matches: Matches, area: int, weights: torch.Tensor) -> torch.Tensor:
    """AP [R, T, K] of every class in one area range, for each weighting."""
    return torch.stack([torch.cat([class_ap(cls, chunk) for chunk in weights.split(CHUNK)])
                        for cls in matches.classes[area]], dim=2)


def _interval(metric_a: torch.Tensor, metric_b: torch.Tensor, level: float) -> Interval:
    """Row 0 is the unresampled value; the others are the resamples."""
    tails = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)

    def bounds(values: torch.Tensor) -> tuple[float, float]:
        values = values[torch.isfinite(values)]
        if not len(values):
            return (float("nan"), float("nan"))
        low, high = torch.quantile(values, tails).tolist()
        return (low, high)

    return Interval(float(metric_a[0]), float(metric_b[0]), bounds(metric_a[1:]),
                    bounds(metric_b[1:]), bounds(metric_a[1:] - metric_b[1:]))


def _json(value: float) -> float | None:
    return None if value != value else float(value)  # nan -> None
