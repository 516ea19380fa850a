"""The Markdown tables of bench/peers.py, from its results JSON."""

from __future__ import annotations


def markdown(data: dict) -> str:
    sections = data["sections"]
    settings = data["settings"]
    parts = ["# yoloq and its peers\n", machine_line(data), ""]
    for name, section in sections.items():
        if "about" in section:
            parts += [accuracy_table(name, section, settings), ""]
    speed = [name for name, section in sections.items() if "about" not in section]
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


def accuracy_table(name: str, section: dict, settings: dict) -> str:
    rows, latency = section["rows"], (section.get("latency") or {}).get("models", {})
    about, batches = section["about"], settings["batches"]
    report = about["splits"].get("report_images", "?")
    lines = [
        f"{name} ({about['model']}, {about['classes']} classes) at {about['img_size']} px: "
        f"mAP by yoloq's evaluator on each tool's ONNX in ONNX Runtime, on {report} report "
        f"images; every tool calibrated on the same {settings['calib_images']} training "
        "images. Drop: points below the float ONNX, with its 95% interval; vs yoloq: the "
        "row's drop minus that of yoloq PTQ with the same head (the ort profile for "
        "quantize_static, the trt profile for Model Optimizer and NNCF). Latency: median "
        f"of {settings['iters']} interleaved runs, and its ratio to the float ONNX.",
        "",
        "| tool | settings | head | mAP@.5:.95 | drop [95% interval] | vs yoloq | mAP@.5 | "
        + " | ".join(f"ms b{b} (x float)" for b in batches)
        + " | tool time |",
        "|---|---|---|---:|---:|---:|---:|" + "---:|" * len(batches) + "---:|",
    ]
    for key, row in rows.items():
        head = row.get("head", "")
        if row.get("error"):
            failed = f"failed: {short(row['error'])}"
            lines.append(f"| {row['tool']} | {row['variant']} | {head} | {failed} "
                         "| | | |" + " |" * len(batches) + " |")
            continue
        cells = [row["tool"], variant(key, row), head, points(row["map50_95"])]
        cells.append(interval(row.get("drop"), row.get("drop_interval")))
        vs = row.get("vs_yoloq") or {}
        cells.append(interval(vs.get("difference"), vs.get("interval"), bold_beyond_zero=True))
        cells.append(points(row["map50"]))
        cells += [timing(latency.get(key, {}).get(str(b))) for b in batches]
        cells.append("" if key == "float" else f"{row['seconds']:.0f} s")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + interval_note(about, rows, settings)


def interval_note(about: dict, rows: dict, settings: dict) -> str:
    images = next((row["images"] for row in rows.values() if "images" in row),
                  about["splits"].get("report_images", "?"))
    select = about["splits"].get("select_images", "?")
    return (
        f"Intervals: paired bootstrap over the {images} report images, "
        f"{settings['resamples']} resamples (both models of a pair scored on the same "
        "resampled images), 95%, in points. \"A beats B\" is supported only where the "
        "interval of their difference excludes 0 (**bold** in the vs yoloq column): "
        "intervals of two drops that overlap do not show that they are level. The search "
        f"and QAT choose on the {select} select images, never on report."
    )


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
    if "best_epoch" in row:  # chosen on the select images
        text += f"; best epoch {row['best_epoch']}"
    return text


def points(value: float) -> str:
    return f"{round(100 * value, 2) + 0.0:.2f}"  # + 0.0: no "-0.00"


def interval(value: float | None, bounds: list | None, bold_beyond_zero: bool = False) -> str:
    """ "0.39 [0.16, 0.58]" in points; bold (when asked) where the interval excludes 0."""
    if value is None:
        return ""
    if not bounds or None in bounds:
        return points(value)
    low, high = bounds
    text = f"{points(value)} [{points(low)}, {points(high)}]"
    return f"**{text}**" if bold_beyond_zero and (low > 0 or high < 0) else text


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
    name = f"[{section}] {row['tool']} ({row['variant']}"
    name += f"; head {row['head']})" if "head" in row else ")"
    if row.get("error"):
        print(f"{name}: FAILED {short(row['error'])}", flush=True)
        return
    score = f"mAP@.5:.95 {points(row['map50_95'])}, " if "map50_95" in row else ""
    if "drop" in row:
        score += f"drop {interval(row['drop'], row['drop_interval'])}, "
    print(f"{name}: {score}{row['seconds']:.1f} s", flush=True)
