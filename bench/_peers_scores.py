"""The accuracy of bench/peers.py's rows: mAP on the report split, and every drop with
its paired bootstrap interval."""

from __future__ import annotations

from pathlib import Path

from _peers_store import Store

from yoloq.evaluate import EvalResult
from yoloq.evaluate.bootstrap import Interval, paired_bootstrap
from yoloq.runtime.backends import get_backend
from yoloq.workflows.steps import evaluate_predictor

FLOAT = "float"


class Scorer:
    """Scores one section's ONNX files on the report split in ONNX Runtime.

    The evaluations stay in memory: their per-image matches, which the intervals are
    computed from, are not in the JSON. A resumed run evaluates a finished row's file
    again when a new row is compared with it (the float ONNX, or yoloq's row)."""

    def __init__(self, store: Store, section: str, space, resamples: int):
        self.store, self.section, self.space = store, section, space
        self.resamples = resamples
        self.evals: dict[str, EvalResult] = {}

    def evaluate_as(self, key: str, against: str | None = None):
        """The `evaluate` of run_row for row `key`: its mAP, its drop below the float
        ONNX and, with `against` (yoloq's row of the same head), the difference of their
        drops, each with its paired interval."""

        def evaluate(path: Path) -> dict:
            result = self.evals[key] = self._evaluate(path)
            fields = {
                "map50_95": result.map50_95,
                "map50": result.map50,
                "images": result.images,
                "eval_seconds": round(result.model_seconds + result.eval_seconds, 1),
            }
            drop = self.paired(FLOAT, key) if key != FLOAT else None
            if drop is not None:
                fields.update(drop=drop.drop, drop_interval=list(drop.drop_interval))
            difference = self.paired(against, key) if against else None
            if difference is not None:  # yoloq's mAP minus this row's: its drop minus yoloq's
                fields["vs_yoloq"] = {
                    "row": against,
                    "difference": difference.drop,
                    "interval": list(difference.drop_interval),
                }
            return fields

        return evaluate

    def paired(self, baseline: str, key: str) -> Interval | None:
        """mAP@.5:.95 of `baseline` minus that of `key`, over the same resampled images;
        None where either row failed."""
        a, b = self.result(baseline), self.result(key)
        if a is None or b is None:
            return None
        intervals = paired_bootstrap(a.matches, b.matches, self.resamples, by_area=False)
        return intervals.map50_95

    def result(self, key: str) -> EvalResult | None:
        if key not in self.evals:
            row = self.store.section(self.section)["rows"].get(key)
            if row is None or row.get("error"):
                return None
            print(f"[{self.section}] evaluating {row['onnx']} again (a resumed run)")
            self.evals[key] = self._evaluate(self.store.work / row["onnx"])
        return self.evals[key]

    def _evaluate(self, path: Path) -> EvalResult:
        return evaluate_predictor(get_backend("onnxruntime").load(path), self.space)
