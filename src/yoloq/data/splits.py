"""The two evaluation splits: `select`, that choices are made on, and `report`, that
every number is measured on.

Whatever chooses (a calibration method, the layers to keep float, QAT's best epoch)
looks only at `select`; a report that chose on the images it reports on would
overstate what the choice buys. A data YAML names them `select:` and `val:`; without
a `select:` entry yoloq splits val itself, deterministically by a seed, and says so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np

from yoloq.data.config import DataConfig
from yoloq.data.dataset import ImageSet, load_split
from yoloq.data.loaders import require_images
from yoloq.errors import YoloqError

SELECT, REPORT = "select", "report"
# Without a select split: this share of val (at least one image) is held out to select on.
SELECT_FRACTION = 0.2


@dataclass(frozen=True)
class EvalSplits:
    """The select and report images of a dataset, and how they were split."""

    select: ImageSet
    report: ImageSet
    origin: str  # "data YAML" or "seeded split of val"
    seed: int | None = None  # the seed of a split yoloq made

    def describe(self) -> str:
        how = ("as the data YAML names them" if self.seed is None
               else f"split from val with seed {self.seed}")
        return f"select {len(self.select)} images, report {len(self.report)} images ({how})"

    def to_dict(self) -> dict:
        return {"select_images": len(self.select), "report_images": len(self.report),
                "origin": self.origin, "seed": self.seed}


def load_eval_splits(config: DataConfig, on_bad_data: str = "error", seed: int = 0,
                     limit: int | None = None) -> EvalSplits:
    """The select and report splits of `config`, each marked with its role.

    `limit` keeps the first N images of each (a quick run). Raises where the two share
    an image: a choice made on report images would not be held apart.
    """
    report = load_split(config, "val", on_bad_data=on_bad_data)
    require_images(report, "evaluate on")
    if SELECT in config.splits:
        splits = EvalSplits(load_split(config, SELECT, on_bad_data=on_bad_data), report,
                            "data YAML")
    else:
        splits = _seeded_split(report, seed)
        warnings.warn(f"{config.file}: no 'select:' split, so yoloq holds out "
                      f"{len(splits.select)} of the {len(report)} val images (seed {seed}) to "
                      "make its choices on and reports on the others; name a 'select:' split "
                      "to choose them yourself", stacklevel=2)
    shared = {r.path for r in splits.select.records} & {r.path for r in splits.report.records}
    if shared:
        raise YoloqError(f"{config.file}: the select and val splits share {len(shared)} images "
                         f"(e.g. {sorted(shared)[0]}); choices must be made on images held "
                         "apart from those reported on")
    return EvalSplits(_as_role(splits.select, SELECT, limit), _as_role(splits.report, REPORT,
                      limit), splits.origin, splits.seed)


def _seeded_split(val: ImageSet, seed: int) -> EvalSplits:
    if len(val) < 2:
        raise YoloqError(f"{', '.join(map(str, val.sources))}: {len(val)} val image(s); a "
                         "select and a report split need at least 2 (or name a 'select:' split)")
    order = np.random.default_rng(seed).permutation(len(val))
    held = max(1, round(SELECT_FRACTION * len(val)))
    chosen = set(order[:held].tolist())
    records = val.records
    select = [r for i, r in enumerate(records) if i in chosen]
    report = [r for i, r in enumerate(records) if i not in chosen]
    return EvalSplits(replace(val, records=select), replace(val, records=report),
                      "seeded split of val", seed)


def _as_role(image_set: ImageSet, role: str, limit: int | None) -> ImageSet:
    records = image_set.records if limit is None else image_set.records[:limit]
    return replace(image_set, records=records, role=role)


def require_select(image_set: ImageSet, step: str) -> None:
    """Refuse to let `step` (a choice) look at the report images."""
    if image_set.role == REPORT:
        raise YoloqError(f"{step} chooses, so it must see the select split, not the report "
                         "split that the results are measured on")
