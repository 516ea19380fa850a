"""The Markdown tables of bench/peers.py, from its results JSON."""

from __future__ import annotations

DEMO = "demo"


def markdown(data: dict) -> str:
    sections = data["sections"]
    settings = data["settings"]
    parts = ["# yoloq and its peers\n", machine_line(data), ""]
    if DEMO in sections:
        parts += [demo_table(sections[DEMO], settings), ""]
    speed = [name for name in sections if name != DEMO]
    if speed:
        parts += [speed_table(sections, speed, settings), ""]
    return "\n".join(parts)


def machine_line(data: dict) -> str:
    machine, versions = data["machine"], data["versions"]
    flags = ", ".join(machine["cpu_flags"]) or "no AVX-512"
    tools = ", ".join(f"{name} {version}" for name, version in versions.items() if version)
    text = (
        f"Measured on {machine['processor']} ({machine['cpu_count']} cores; {flags}), "
        f"ONNX Runtime's CPU provider; {tools}."
    )
    if "wall_seconds" in data:
        text += f" The whole run took {data['wall_seconds'] / 60:.0f} minutes in all"
        load = data.get("load_average")
        if load:  # other work on the machine slows every tool alike, but shows in the times
            text += f" (1-minute load average {load['start']:.1f} at the start, "
            text += f"{load['end']:.1f} at the end)"
        text += "."
    return text


def demo_table(section: dict, settings: dict) -> str:
    rows, latency = section["rows"], (section.get("latency") or {}).get("models", {})
    float_map = rows.get("float", {}).get("map50_95")
    batches = settings["batches"]
    val = settings["val_images"] or "all 500"
    lines = [
        f"Demo model (YOLOv7-tiny at half width, 8 classes): {val} val images at 320 px, every "
        f"tool calibrated on the same {settings['calib_images']} training images. mAP by "
        "yoloq's evaluator on each tool's ONNX in ONNX Runtime (drop: points below the float "
        "ONNX); latency: median of "
        f"{settings['iters']} interleaved runs, and its ratio to the float ONNX.",
        "",
        "| tool | settings | mAP@.5:.95 | drop | mAP@.5 | "
        + " | ".join(f"ms b{b} (x float)" for b in batches)
        + " | tool time |",
        "|---|---|---:|---:|---:|" + "---:|" * len(batches) + "---:|",
    ]
    for key, row in rows.items():
        if row.get("error"):
            lines.append(
                f"| {row['tool']} | {row['variant']} | failed: {short(row['error'])} "
                "| | |" + " |" * len(batches) + " |"
            )
            continue
        drop = "" if key == "float" or float_map is None else points(float_map - row["map50_95"])
        cells = [
            row["tool"],
            variant(key, row),
            points(row["map50_95"]),
            drop,
            points(row["map50"]),
        ]
        cells += [timing(latency.get(key, {}).get(str(b))) for b in batches]
        cells.append("" if key == "float" else f"{row['seconds']:.0f} s")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def speed_table(sections: dict, names: list[str], settings: dict) -> str:
    batches = settings["batches"]
    keys = list(dict.fromkeys(key for name in names for key in sections[name]["rows"]))
    header = [f"{name} b{b}" for name in names for b in batches]
    lines = [
        f"Speed alone: full-width models with random weights (and BatchNorm statistics) at "
        f"{settings['speed_img']} px, "
        f"every tool calibrated on the same {settings['speed_calib_images']} smooth random "
        f"images; latency ratio to the float ONNX (median ms), median of "
        f"{settings['speed_iters']} interleaved runs.",
        "",
        "| tool | settings | " + " | ".join(header) + " | tool time |",
        "|---|---|" + "---:|" * (len(header) + 1),
    ]
    for key in keys:
        first = next(sections[name]["rows"][key] for name in names if key in sections[name]["rows"])
        cells, times = [first["tool"], variant(key, first)], []
        for name in names:
            row = sections[name]["rows"].get(key, {})
            latency = (sections[name].get("latency") or {}).get("models", {}).get(key, {})
            if row.get("error"):
                cells += [f"failed: {short(row['error'])}"] + [""] * (len(batches) - 1)
                continue
            cells += [timing(latency.get(str(b)), ratio_first=True) for b in batches]
            if key != "float" and "seconds" in row:
                times.append(f"{row['seconds']:.0f}")
        cells.append(" / ".join(times) + " s" if times else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def variant(key: str, row: dict) -> str:
    """The row's settings, plus what the search kept float or which QAT epoch won."""
    text = row["variant"]
    if "fallback" in row:
        kept = ", ".join(row["fallback"]) or "none"
        text += f"; kept float: {kept} ({row['tried']} tried)"
    if "best_epoch" in row:
        text += f"; best epoch {row['best_epoch']}"
    return text


def points(value: float) -> str:
    return f"{100 * value:.2f}"


def timing(stats: dict | None, ratio_first: bool = False) -> str:
    if not stats:
        return "-"
    if ratio_first:
        return f"{stats['ratio']:.2f}x ({stats['median_ms']:.0f})"
    return f"{stats['median_ms']:.1f} ({stats['ratio']:.2f}x)"


def short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def print_row(section: str, key: str, row: dict) -> None:
    if row.get("error"):
        print(f"[{section}] {row['tool']} ({row['variant']}): FAILED {short(row['error'])}")
        return
    score = f"mAP@.5:.95 {points(row['map50_95'])}, " if "map50_95" in row else ""
    print(
        f"[{section}] {row['tool']} ({row['variant']}): {score}{row['seconds']:.1f} s", flush=True
    )
