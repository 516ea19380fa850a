"""Read TensorRT's engine JSON (layer information and per-layer profiles) into an
`EngineGraph`, whichever TensorRT wrote it.

Layer information (`IEngineInspector.get_engine_information(LayerInformationFormat.JSON)`
of an engine built with detailed profiling verbosity, or `trtexec --exportLayerInfo`):
- TensorRT 8.6 to 10: {"Layers": [...], "Bindings": ["input", "output"]}; each
  tensor has "Name", "Dimensions" and one "Format/Datatype" string, long for
  classic kernels ("Thirty-two wide channel vectorized row major Int8 format") and
  short for generated ones ("Half"). From 8.6 a layer may carry "Metadata", the
  ONNX nodes it came from ("[ONNX Layer: /model.0/conv/Conv]", several joined by
  the control character 0x1E).
- TensorRT 11: "Bindings" became "I/O Tensors", a list of objects with "Name" and
  "IOMode"; a tensor's type may come as separate "Format" and "DataType" fields.
- Without detailed verbosity "Layers" is only a list of names: refused, with the fix.
- Engines with several optimisation profiles repeat every layer with a
  " [profile N]" suffix; profile 0 is kept.

Profiles (`trtexec --exportProfile`, and `yoloq trt bench`): a list whose first item
may be {"count": runs}, then {"name", "timeMs", "averageMs", "medianMs",
"percentage"} per layer (TensorRT 8.2 and older leave out "medianMs").
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

from yoloq.errors import YoloqError
from yoloq.runtime.tensorrt.layers import EngineGraph, EngineLayer, Tensor, dtype_of, short_format

_SEPARATORS = {"\x1e": " + ", "\x1f": " + "}  # TensorRT's unit/record separators
_OTHER_PROFILE = re.compile(r"\[profile ([1-9]\d*)\]")
_ONNX_NODE = re.compile(r"\[ONNX Layer: ([^\]]*)\]")
_SKIPPED_KINDS = {"signal", "wait"}  # stream synchronisation, not computation


def load_engine_graph(layers: str | Path, profile: str | Path | None = None) -> EngineGraph:
    """The engine graph of a layer-information JSON, timed by a profile JSON if given.

    Example:
        graph = load_engine_graph("ptq.layers.json", "ptq.profile.json")
        summarize(graph).lines()
    """
    graph = parse_layer_information(_read_json(layers))
    if profile is not None:
        graph = attach_profile(graph, *parse_profile(_read_json(profile)))
    return graph


def _read_json(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise YoloqError(f"file not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise YoloqError(f"{path}: not JSON ({error})") from None


def parse_layer_information(data) -> EngineGraph:
    """An EngineGraph from the inspector's JSON (already loaded); see the module doc."""
    raw_layers, fmt = _layer_list(data)
    if raw_layers and not all(isinstance(layer, dict) for layer in raw_layers):
        raise YoloqError(
            "the layer information holds layer names only: the engine was built without "
            "detailed profiling verbosity; rebuild it with `yoloq trt build` (or trtexec "
            "--profilingVerbosity=detailed)"
        )
    layers = [_layer(raw) for raw in raw_layers if _kept(raw)]
    if not layers:
        raise YoloqError("the layer information has no layers")
    inputs, outputs = _io_names(data, layers)
    return EngineGraph(layers, inputs, outputs, fmt)


def _layer_list(data) -> tuple[list, str]:
    if isinstance(data, list):
        return data, "a list of layers"
    if not isinstance(data, dict):
        raise YoloqError("the layer information is neither a JSON object nor a list")
    if "Layers" in data:
        if "I/O Tensors" in data:
            return data["Layers"], "TensorRT 11 (I/O Tensors)"
        if "Bindings" in data:
            return data["Layers"], "TensorRT up to 10 (Bindings)"
        return data["Layers"], "TensorRT layer information without bindings"
    if "Name" in data and "LayerType" in data:  # get_layer_information of one layer
        return [data], "one layer"
    raise YoloqError("the JSON has no 'Layers': not TensorRT layer information")


def _kept(raw: dict) -> bool:
    other_profile = _OTHER_PROFILE.search(str(raw.get("Name", "")))
    return other_profile is None and str(raw.get("LayerType", "")).lower() not in _SKIPPED_KINDS


def _clean(text) -> str:
    text = str(text)
    for char, replacement in _SEPARATORS.items():
        text = text.replace(char, replacement)
    return "".join(c for c in text if c >= " " or c in "\t\n")


def _layer(raw: dict) -> EngineLayer:
    metadata = _clean(raw.get("Metadata", ""))
    tactic = raw.get("TacticName") or raw.get("TacticValue") or ""
    return EngineLayer(
        name=_clean(raw.get("Name", "?")),
        kind=str(raw.get("LayerType") or raw.get("ParameterType") or "?"),
        inputs=tuple(_tensor(t) for t in raw.get("Inputs", []) if isinstance(t, dict)),
        outputs=tuple(_tensor(t) for t in raw.get("Outputs", []) if isinstance(t, dict)),
        origin=str(raw.get("Origin", "")),
        onnx_nodes=tuple(_ONNX_NODE.findall(metadata)),
        tactic=str(tactic),
    )


def _tensor(raw: dict) -> Tensor:
    combined = raw.get("Format/Datatype")
    type_text = raw.get("DataType") or raw.get("Datatype") or combined or raw.get("Format")
    layout_text = combined or raw.get("Format")
    dims = raw.get("Dimensions") or []
    return Tensor(
        name=_clean(raw.get("Name", "")),
        shape=tuple(int(d) for d in dims if isinstance(d, (int, float))),
        dtype=dtype_of(str(type_text or "")),
        layout=short_format(str(layout_text or "")),
    )


def _io_names(data, layers: list[EngineLayer]) -> tuple[list[str], list[str]]:
    """The engine's inputs and outputs: from "I/O Tensors" (11), or the "Bindings"
    names (8.6 to 10) split by whether a layer writes them."""
    if isinstance(data, dict) and isinstance(data.get("I/O Tensors"), list):
        tensors = [t for t in data["I/O Tensors"] if isinstance(t, dict) and _kept(t)]
        inputs = [t["Name"] for t in tensors if str(t.get("IOMode", "")).lower() == "input"]
        outputs = [t["Name"] for t in tensors if str(t.get("IOMode", "")).lower() == "output"]
        return inputs, outputs
    written = {tensor.name for layer in layers for tensor in layer.outputs}
    read = {tensor.name for layer in layers for tensor in layer.inputs}
    names = data.get("Bindings", []) if isinstance(data, dict) else []
    names = [_clean(n) for n in names if isinstance(n, str) and not _OTHER_PROFILE.search(n)]
    if not names:  # no bindings listed: what no layer writes, and what no layer reads
        names = sorted((read - written) | (written - read))
    return [n for n in names if n not in written], [n for n in names if n in written]


# --- profiles -----------------------------------------------------------------------------


def parse_profile(data) -> tuple[list[tuple[str, float]], int | None]:
    """([(layer name, average ms per inference)], runs) from a profile JSON (loaded)."""
    if not isinstance(data, list):
        raise YoloqError("a TensorRT profile is a JSON list of per-layer records")
    count = None
    if data and isinstance(data[0], dict) and set(data[0]) == {"count"}:
        count = int(data[0]["count"])
    times = []
    for record in data:
        if not isinstance(record, dict) or "name" not in record:
            continue
        if "averageMs" in record:
            times.append((_clean(record["name"]), float(record["averageMs"])))
        elif "timeMs" in record and count:
            times.append((_clean(record["name"]), float(record["timeMs"]) / count))
    if not times:
        raise YoloqError("the profile has no per-layer times")
    return times, count


def attach_profile(
    graph: EngineGraph, times: list[tuple[str, float]], runs: int | None
) -> EngineGraph:
    """The graph with each layer's average time.

    A profile lists the layers in the engine's order, so it is matched by position
    when the names agree (layer names may repeat); otherwise by name. Timed names
    the graph lacks are kept in `unmatched_profile` (a profile of another engine
    shows there).
    """
    names = [layer.name for layer in graph.layers]
    if [name for name, _ in times] == names:
        averages = [ms for _, ms in times]
    else:
        by_name = {}
        for name, ms in times:
            by_name.setdefault(name, ms)
        averages = [by_name.get(name) for name in names]
    layers = [replace(layer, time_ms=ms) for layer, ms in zip(graph.layers, averages)]
    unmatched = [name for name, _ in times if name not in set(names)]
    return replace(graph, layers=layers, profile_runs=runs, unmatched_profile=unmatched)
