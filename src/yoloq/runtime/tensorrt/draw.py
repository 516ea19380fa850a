"""Draw an engine graph: SVG, or a self-contained HTML page around it. yoloq writes both
itself (no Graphviz): a layered layout, top to bottom in execution order.

Each box is one engine layer (a fused layer is one box, its parts in the tooltip),
filled by the precision it writes; reformat layers are red-edged; edges are coloured
by the type of the tensor they carry. A summary heads the drawing: layers by
precision, reformat count and the time they take.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from pathlib import Path

from yoloq.errors import YoloqError
from yoloq.runtime.tensorrt.layers import EngineGraph, EngineLayer, EngineSummary, summarize

NODE_W, NODE_H, GAP_X, GAP_Y, MARGIN, LINE = 340, 62, 28, 34, 24, 18
FILLS = {
    "int8": "#b6d7a8",
    "fp16": "#a4c2f4",
    "fp32": "#f9cb9c",
    "bf16": "#d5a6bd",
    "fp8": "#ffe599",
}
STROKES = {
    "int8": "#38761d",
    "fp16": "#1c4587",
    "fp32": "#b45f06",
    "bf16": "#741b47",
    "fp8": "#bf9000",
}
OTHER_FILL, OTHER_STROKE = "#e6e6e6", "#666666"
REFORMAT_FILL, REFORMAT_STROKE = "#f4cccc", "#cc0000"
IO_FILL = "#ffffff"
TITLE_CHARS = 50
NodeKey = tuple[str, object]  # ("in", name) | ("layer", index) | ("out", name)


@dataclass(frozen=True)
class Node:
    key: NodeKey
    x: float
    y: float
    lines: tuple[str, ...]
    fill: str
    stroke: str
    stroke_width: float
    tooltip: str


def draw_engine(graph: EngineGraph, out: str | Path, title: str = "") -> Path:
    """Write the drawing to `out`: SVG for .svg, a self-contained page for .html."""
    out = Path(out)
    if out.suffix.lower() not in (".svg", ".html", ".htm"):
        raise YoloqError(f"--out {out}: write .svg or .html")
    out.parent.mkdir(parents=True, exist_ok=True)
    svg = engine_svg(graph, title)
    text = svg if out.suffix.lower() == ".svg" else engine_html(graph, svg, title)
    out.write_text(text, encoding="utf-8")
    return out


# --- layout -------------------------------------------------------------------------------


def _sources(graph: EngineGraph) -> dict[str, NodeKey]:
    """Tensor name -> the node that writes it (a layer, or an engine input)."""
    sources: dict[str, NodeKey] = {name: ("in", name) for name in graph.inputs}
    for index, layer in enumerate(graph.layers):
        for tensor in layer.outputs:
            sources[tensor.name] = ("layer", index)
    return sources


def ranks(graph: EngineGraph) -> dict[NodeKey, int]:
    """Each node's row: one below the lowest node it reads from (inputs on row 0)."""
    sources = _sources(graph)
    rank: dict[NodeKey, int] = {("in", name): 0 for name in graph.inputs}
    for index, layer in enumerate(graph.layers):
        above = [
            rank[sources[t.name]]
            for t in layer.inputs
            if t.name in sources and sources[t.name] in rank
        ]
        rank[("layer", index)] = 1 + max(above, default=0)
    for name in graph.outputs:
        if name in sources and sources[name] in rank:
            rank[("out", name)] = rank[sources[name]] + 1
    return rank


def positions(rank: dict[NodeKey, int], top: float) -> tuple[dict[NodeKey, tuple], float, float]:
    """Top-left corner of each node, rows centred; and the drawing's width and height."""
    rows: dict[int, list[NodeKey]] = {}
    for key in rank:  # insertion order: inputs, layers in execution order, outputs
        rows.setdefault(rank[key], []).append(key)
    widest = max(len(row) for row in rows.values())
    content = widest * (NODE_W + GAP_X) - GAP_X
    placed = {}
    for row, keys in rows.items():
        start = MARGIN + (content - (len(keys) * (NODE_W + GAP_X) - GAP_X)) / 2
        for column, key in enumerate(keys):
            placed[key] = (start + column * (NODE_W + GAP_X), top + row * (NODE_H + GAP_Y))
    height = top + (max(rows) + 1) * (NODE_H + GAP_Y) - GAP_Y + MARGIN
    return placed, content + 2 * MARGIN, height


# --- nodes and edges ----------------------------------------------------------------------


def layer_title(layer: EngineLayer) -> str:
    """The parts of a fused name that say most, without its weights, biases and Q/DQ
    ('w + QuantizeLinear_8 + Conv_12 + PWN(Clip_16)' -> 'Conv_12 + PWN(Clip_16)')."""
    plain = [part for part in layer.parts if not _is_plumbing(part)]
    return _shorten(" + ".join(plain or layer.parts), TITLE_CHARS)


def _is_plumbing(part: str) -> bool:
    lowered = part.lower()
    return lowered.endswith((".weight", ".bias")) or "quantizelinear" in lowered


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def layer_lines(layer: EngineLayer, total_ms: float | None) -> tuple[str, ...]:
    """Three lines: the title; type and precision (a reformat: what it converts); time."""
    if layer.is_reformat:
        source = layer.inputs[0] if layer.inputs else None
        target = layer.outputs[0] if layer.outputs else None
        what = "Q/DQ reformat" if layer.origin.upper() == "QDQ" else "reformat"
        second = (
            f"{what}: {source.dtype} {source.layout} → {target.dtype} {target.layout}"
            if source and target
            else what
        )
    else:
        second = f"{layer.kind} · {layer.precision}"
        if layer.fused:
            second += f" · {max(len(layer.parts), len(layer.onnx_nodes))} fused"
    third = ""
    if layer.time_ms is not None:
        share = f" ({100 * layer.time_ms / total_ms:.1f}%)" if total_ms else ""
        third = f"{layer.time_ms:.4f} ms{share}"
    return layer_title(layer), _shorten(second, TITLE_CHARS), third


def layer_tooltip(layer: EngineLayer) -> str:
    lines = [layer.name, f"type: {layer.kind}", f"precision: {layer.precision}"]
    if layer.origin:
        lines.append(f"origin: {layer.origin}")
    for label, tensors in (("in", layer.inputs), ("out", layer.outputs)):
        for t in tensors:
            lines.append(f"{label}: {t.name} {list(t.shape)} {t.dtype} {t.layout}".rstrip())
    lines += [f"onnx: {node}" for node in layer.onnx_nodes]
    if layer.tactic:
        lines.append(f"tactic: {layer.tactic}")
    if layer.time_ms is not None:
        lines.append(f"time: {layer.time_ms:.4f} ms")
    return "\n".join(lines)


def build_nodes(graph: EngineGraph, placed: dict, total_ms: float | None) -> list[Node]:
    nodes = []
    for key, (x, y) in placed.items():
        kind, value = key
        if kind != "layer":
            label = "engine input" if kind == "in" else "engine output"
            lines = (_shorten(str(value), TITLE_CHARS), label, "")
            nodes.append(Node(key, x, y, lines, IO_FILL, OTHER_STROKE, 1.0, f"{label}: {value}"))
            continue
        layer = graph.layers[value]
        fill = FILLS.get(layer.precision, OTHER_FILL)
        stroke, width = STROKES.get(layer.precision, OTHER_STROKE), 1.0
        if layer.is_reformat:
            fill, stroke, width = REFORMAT_FILL, REFORMAT_STROKE, 3.0
        lines, tooltip = layer_lines(layer, total_ms), layer_tooltip(layer)
        nodes.append(Node(key, x, y, lines, fill, stroke, width, tooltip))
    return nodes


def edge_paths(graph: EngineGraph, placed: dict, rank: dict) -> list[tuple[str, str, str]]:
    """(SVG path, colour, tooltip) per tensor passed between two drawn nodes."""
    sources, paths = _sources(graph), []
    targets = [(("layer", i), t) for i, layer in enumerate(graph.layers) for t in layer.inputs]
    targets += [(("out", name), None) for name in graph.outputs if ("out", name) in placed]
    for target, tensor in targets:
        name = tensor.name if tensor is not None else target[1]
        source = sources.get(name)
        if source is None or source not in placed or target not in placed:
            continue
        (x1, y1), (x2, y2) = placed[source], placed[target]
        x1, y1, x2 = x1 + NODE_W / 2, y1 + NODE_H, x2 + NODE_W / 2
        bow = NODE_W * 0.6 if rank[target] - rank[source] > 1 else 0.0  # skip over rows
        path = (
            f"M{x1:.1f},{y1:.1f} C{x1 + bow:.1f},{y1 + GAP_Y:.1f} "
            f"{x2 + bow:.1f},{y2 - GAP_Y:.1f} {x2:.1f},{y2:.1f}"
        )
        dtype = tensor.dtype if tensor is not None else "?"
        detail = f"{name} {list(tensor.shape)} {dtype} {tensor.layout}" if tensor else name
        paths.append((path, STROKES.get(dtype, OTHER_STROKE), detail.rstrip()))
    return paths


# --- SVG and HTML -------------------------------------------------------------------------


def engine_svg(graph: EngineGraph, title: str = "") -> str:
    """The drawing as an SVG document, summary on top."""
    summary = summarize(graph)
    header = [title or "TensorRT engine", *summary.lines()]
    top = MARGIN + LINE * (len(header) + 2)
    rank = ranks(graph)
    placed, width, height = positions(rank, top)
    width = max(width, 620)
    parts = [_svg_open(width, height), *_svg_header(header)]
    for path, color, tooltip in edge_paths(graph, placed, rank):
        parts.append(
            f'<path d="{path}" fill="none" stroke="{color}" stroke-width="1.5" '
            f'marker-end="url(#arrow)"><title>{_x(tooltip)}</title></path>'
        )
    for node in build_nodes(graph, placed, summary.total_ms):
        parts.append(_svg_node(node))
    parts.append("</svg>\n")
    return "\n".join(parts)


def _svg_open(width: float, height: float) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="12">\n'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        f'fill="{OTHER_STROKE}"/></marker></defs>\n'
        f'<rect width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>'
    )


def _svg_header(lines: list[str]) -> list[str]:
    parts = []
    for i, line in enumerate(lines):
        weight = ' font-weight="bold" font-size="15"' if i == 0 else ""
        parts.append(
            f'<text x="{MARGIN}" y="{MARGIN + LINE * (i + 0.5):.0f}"{weight}>{_x(line)}</text>'
        )
    y, x = MARGIN + LINE * (len(lines) + 0.3), MARGIN
    legend = [(name, FILLS[name], STROKES[name], 1) for name in ("int8", "fp16", "fp32")]
    legend += [
        ("other", OTHER_FILL, OTHER_STROKE, 1),
        ("reformat", REFORMAT_FILL, REFORMAT_STROKE, 3),
    ]
    for name, fill, stroke, width in legend:
        parts.append(
            f'<rect x="{x}" y="{y:.0f}" width="14" height="14" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="{width}"/>'
            f'<text x="{x + 20}" y="{y + 11:.0f}">{name}</text>'
        )
        x += 90
    return parts


def _svg_node(node: Node) -> str:
    texts = []
    for i, line in enumerate(node.lines):
        weight = ' font-weight="bold"' if i == 0 else ""
        texts.append(
            f'<text x="{node.x + 8:.1f}" y="{node.y + 17 + i * 17:.1f}"{weight}>{_x(line)}</text>'
        )
    return (
        f"<g><title>{_x(node.tooltip)}</title>"
        f'<rect x="{node.x:.1f}" y="{node.y:.1f}" width="{NODE_W}" height="{NODE_H}" rx="6" '
        f'fill="{node.fill}" stroke="{node.stroke}" stroke-width="{node.stroke_width}"/>'
        + "".join(texts)
        + "</g>"
    )


def _x(text: str) -> str:
    """Text safe inside XML: escaped, without the control characters XML forbids."""
    return escape("".join(c for c in str(text) if c >= " " or c in "\t\n"), quote=True)


def engine_html(graph: EngineGraph, svg: str, title: str = "") -> str:
    """A self-contained page: the summary as tables, then the drawing."""
    summary = summarize(graph)
    name = _x(title or "TensorRT engine")
    body = [
        f"<h1>{name}</h1>",
        f"<p>{_x(graph.format)}</p>",
        "<ul>" + "".join(f"<li>{_x(line)}</li>" for line in summary.lines()) + "</ul>",
        _precision_table(summary),
        _reformat_table(graph),
        _slowest_table(summary),
        "<h2>Layers</h2>",
        "<p>Hover a box for its details.</p>",
        svg,
    ]
    style = (
        "body{font-family:sans-serif;margin:24px}table{border-collapse:collapse;"
        "margin-bottom:16px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
        "td.n{text-align:right}"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{name}'
        f"</title><style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _table(caption: str, headers: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{_x(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(map(_cell, row)) + "</tr>" for row in rows)
    return f"<h2>{_x(caption)}</h2><table><tr>{head}</tr>{body}</table>"


def _cell(text: str) -> str:
    """A table cell; numbers right-aligned."""
    try:
        float(text)
    except ValueError:
        return f"<td>{_x(text)}</td>"
    return f'<td class="n">{_x(text)}</td>'


def _precision_table(summary: EngineSummary) -> str:
    rows = [
        [name, str(count), _ms(summary.ms_by_precision.get(name))]
        for name, count in summary.by_precision.items()
    ]
    return _table("Layers by precision", ["precision", "layers", "ms"], rows)


def _reformat_table(graph: EngineGraph) -> str:
    rows = []
    for layer in graph.layers:
        if layer.is_reformat:
            source = layer.inputs[0] if layer.inputs else None
            target = layer.outputs[0] if layer.outputs else None
            change = (
                f"{source.dtype} {source.layout} → {target.dtype} {target.layout}"
                if (source and target)
                else ""
            )
            rows.append([layer.name, layer.origin, change, _ms(layer.time_ms)])
    return _table("Reformat layers", ["layer", "origin", "conversion", "ms"], rows)


def _slowest_table(summary: EngineSummary) -> str:
    rows = [[name, _ms(ms)] for name, ms in summary.slowest]
    return _table("Slowest layers", ["layer", "ms"], rows)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
