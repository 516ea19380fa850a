"""Proxy vs mAP sensitivity on the demo model: the time each takes and how well the
proxy's ranking agrees with the mAP ranking (Spearman rank correlation).

    python bench/sensitivity_cost.py --val-images 500
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

from _common import machine, write_json

from yoloq.sensitivity import rank
from yoloq.workflows.sensitivity import SensitivityConfig, run_sensitivity


def spearman(first: list[str], second: list[str]) -> float:
    """Spearman's rho of two rankings of the same items (no ties)."""
    position = {name: i for i, name in enumerate(second)}
    n = len(first)
    squared = sum((i - position[name]) ** 2 for i, name in enumerate(first))
    return 1 - 6 * squared / (n * (n * n - 1))


def timed_run(mode: str, args, out: str):
    config = SensitivityConfig(
        weights=args.weights,
        data=args.data,
        out=out,
        mode=mode,
        val_images=args.val_images,
        calib_images=args.calib_images,
        proxy_batches=args.proxy_batches,
        workers=args.workers,
    )
    started = time.perf_counter()
    run = run_sensitivity(config)
    return run, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="demo")
    parser.add_argument("--data", default="demo")
    parser.add_argument("--val-images", type=int, default=500)
    parser.add_argument("--calib-images", type=int, default=256)
    parser.add_argument("--proxy-batches", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    folder = tempfile.mkdtemp(prefix="yoloq-sensitivity-")
    try:
        proxy, proxy_seconds = timed_run("proxy", args, f"{folder}/proxy")
        by_map, map_seconds = timed_run("map", args, f"{folder}/map")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    proxy_order = [name for name, _ in rank(dict(proxy.ranking))]
    map_order = [name for name, _ in rank(dict(by_map.ranking))]
    rho = spearman(proxy_order, map_order)
    top = 10
    overlap = len(set(proxy_order[:top]) & set(map_order[:top]))
    print(
        f"proxy {proxy_seconds:.0f} s, map {map_seconds:.0f} s "
        f"({map_seconds / proxy_seconds:.1f}x); Spearman rho {rho:.3f}; "
        f"top-{top} overlap {overlap}"
    )
    path = write_json(
        "sensitivity_cost.json",
        {
            "benchmark": "sensitivity_cost",
            "weights": args.weights,
            "data": args.data,
            "val_images": args.val_images,
            "layers": len(map_order),
            "proxy_seconds": proxy_seconds,
            "map_seconds": map_seconds,
            "spearman": rho,
            f"top{top}_overlap": overlap,
            "proxy_top": proxy.ranking[:top],
            "map_top": by_map.ranking[:top],
            "machine": machine(),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
