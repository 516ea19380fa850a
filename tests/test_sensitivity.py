import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from yoloq.models.native import load_float_checkpoint
from yoloq.models.quantized import quantize_yolo
from yoloq.models.sensitivity import detection_error, detector_output_error, yolo_units
from yoloq.quant import QuantMode, calibrate, disable_quantization
from yoloq.quant.calibrate import calibrate_groups
from yoloq.sensitivity import (
    Measurement,
    ResultsStore,
    output_error_measure,
    rank,
    score_units,
    search_fallback,
)
from yoloq.workflows.sensitivity import SensitivityConfig, run_sensitivity
from yoloq.workflows.steps import significant_gain

FRAGILE = "model.4"


@pytest.fixture()
def quantized(tiny_yolo):
    """The tiny YOLO, PTQ'd, with one layer made fragile: its weight range cut to 2%."""
    float_model = load_float_checkpoint(tiny_yolo).fuse()
    model = load_float_checkpoint(tiny_yolo).fuse()
    quantize_yolo(model)
    torch.manual_seed(0)
    images = torch.rand(8, 3, 128, 128)
    calibrate(model, [images], method="max", show_progress=False)
    # A weight quantizer: no other layer shares it. (An input quantizer may be tied to
    # other layers' inputs: switching any of those float re-derives the shared scale.)
    quantizer = model.model[4].conv.weight_quantizer
    quantizer.set_amax(quantizer.amax * 0.02)
    return float_model, model, images


def units_of(model, images, only=None):
    """The model's layers as units; a part of a tied group left quantized is recalibrated
    on the same images, as ignoring the rest would."""
    def regroup(groups):
        return calibrate_groups(model, [images], groups, "max", show_progress=False)

    return yolo_units(model, regroup=regroup, only=only)


def first_layers(count):
    return [f"model.{i}" for i in range(count)]


def is_off(model, units, name):
    """Whether every call site of the unit runs float (a disabled quantizer stands there)."""
    return all(model.get_submodule(site).mode == QuantMode.DISABLED
               for site in units.members[name])


def proxy_measure(float_model, model, images):
    """Minus the detection error against the model with every quantizer off, which is
    the float model: checked here before it is used."""
    with torch.inference_mode(), disable_quantization(model):
        pairs = zip(model(images)[1], float_model(images)[1])
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in pairs)
    return output_error_measure(model, [images], detector_output_error)


def test_fragile_layer_ranks_first_by_proxy(quantized, tmp_path):
    float_model, model, images = quantized
    groups = units_of(model, images)
    measure = proxy_measure(float_model, model, images)
    scores = score_units(groups, measure, ResultsStore(tmp_path / "s.json", {}),
                          baseline=measure(), show_progress=False)
    assert rank(scores)[0][0] == FRAGILE
    assert len(scores) == len(groups) > 40


def test_detection_error_ignores_boxes_and_classes_where_nothing_is_detected():
    teacher = torch.full((1, 1, 2, 1, 7), -3.0)  # two anchors: x y w h obj cls0 cls1
    teacher[..., 0, 0, 4] = 8.0  # anchor 0 sees an object, anchor 1 (obj -12) does not
    teacher[..., 1, 0, 4] = -12.0
    shifted_at_object, shifted_at_background = teacher.clone(), teacher.clone()
    shifted_at_object[..., 0, 0, 5] += 2.0
    shifted_at_background[..., 1, 0, 5] += 2.0
    at_object = detection_error(shifted_at_object, teacher).item()
    at_background = detection_error(shifted_at_background, teacher).item()
    assert at_object > 0.01 and at_background < 1e-5 * at_object
    teacher_objectness_moved = teacher.clone()
    teacher_objectness_moved[..., 1, 0, 4] = 0.0  # objectness counts everywhere
    assert detection_error(teacher_objectness_moved, teacher).item() > 0.2


def test_interrupted_run_resumes_without_recomputing(quantized, tmp_path):
    float_model, model, images = quantized
    groups = units_of(model, images, only=first_layers(6))
    measure = proxy_measure(float_model, model, images)
    baseline = measure()
    calls = []

    def interrupted():
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return measure()

    path = tmp_path / "sensitivity.json"
    with pytest.raises(KeyboardInterrupt):
        score_units(groups, interrupted, ResultsStore(path, {"a": 1}), baseline=baseline,
                     show_progress=False)
    assert len(json.loads(path.read_text())["scores"]) == 2
    counted = []

    def counting():
        counted.append(1)
        return measure()

    resumed = score_units(groups, counting, ResultsStore(path, {"a": 1}), baseline=baseline,
                           show_progress=False)
    fresh = score_units(groups, measure, ResultsStore(tmp_path / "fresh.json", {"a": 1}),
                         baseline=baseline, show_progress=False)
    assert len(counted) == 4 and resumed == pytest.approx(fresh, rel=1e-9, abs=1e-15)
    with pytest.raises(Exception, match="other settings"):
        ResultsStore(path, {"a": 2})


def test_search_stops_at_target_and_keeps_only_improving_layers(quantized):
    _, model, images = quantized
    groups = units_of(model, images, only=first_layers(6))
    names = list(groups)
    # A stand-in mAP, read from which quantizers are really off: layer 0 helps by 0.05,
    # layer 1 hurts, layer 2 helps by 0.03, the rest do nothing.
    effect = {names[0]: 0.05, names[1]: -0.01, names[2]: 0.03}

    def measure():
        off = {n for n in groups if is_off(model, groups, n)}
        return 0.40 + sum(effect.get(n, 0.0) for n in off)

    ranking = [names[1], names[0], names[3], names[2], names[4], names[5]]
    result = search_fallback(groups, ranking, measure, float_map=0.50, target_drop=0.05,
                             show_progress=False)
    assert result.fallback == [names[0]]  # names[1] did not improve: quantized again
    assert [step["layer"] for step in result.history] == [names[1], names[0]]  # stopped
    assert result.final_drop == pytest.approx(0.05)
    assert not is_off(model, groups, names[1]) and is_off(model, groups, names[0])


def test_interrupted_search_resumes_from_its_saved_steps(quantized):
    _, model, images = quantized
    groups = units_of(model, images, only=first_layers(6))
    names = list(groups)
    effect = {names[0]: 0.01, names[2]: 0.02, names[4]: 0.03}
    calls = []

    def measure():
        calls.append(1)
        off = {n for n in groups if is_off(model, groups, n)}
        return 0.40 + sum(effect.get(n, 0.0) for n in off)

    def search(**kwargs):
        groups.enable(names)
        return search_fallback(groups, names, measure, float_map=0.45, target_drop=0.0,
                               start_map=0.40, show_progress=False, **kwargs)

    uninterrupted = search()
    saved = []

    def stop_after_three(history):
        saved[:] = [dict(step) for step in history]
        if len(history) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        search(on_step=stop_after_three)
    calls.clear()
    resumed = search(done_steps=saved)
    assert len(calls) == len(uninterrupted.history) - 3  # the saved steps are not measured
    assert resumed.fallback == uninterrupted.fallback == [names[0], names[2], names[4]]
    assert resumed.history == uninterrupted.history
    assert resumed.final_map == pytest.approx(uninterrupted.final_map)


def fragile_checkpoint(tiny_yolo, path, profile="trt"):
    """A ptq.pt of the tiny YOLO whose model.4 weights are cut to 2% of their range."""
    from yoloq.models.quantized import save_quantized

    model = load_float_checkpoint(tiny_yolo).fuse()
    _, _, config = quantize_yolo(model, profile, weight_bits=8)
    torch.manual_seed(0)
    calibrate(model, [torch.rand(8, 3, 128, 128)], method="max", show_progress=False)
    quantizer = model.model[4].conv.weight_quantizer
    quantizer.set_amax(quantizer.amax * 0.02)
    return save_quantized(model, path, profile, config, 128,
                          calibration={"method": "max", "images": 8, "seconds": 0.0})


def test_workflow_ranks_a_fragile_layer_and_its_ignore_line_keeps_it_float(
        tiny_yolo, tiny_data, tmp_path):
    ptq = fragile_checkpoint(tiny_yolo, tmp_path / "ptq.pt")
    config = SensitivityConfig(weights=str(tiny_yolo), data=str(tiny_data), ptq=str(ptq),
                               out=str(tmp_path / "sens"), mode="proxy", batch=4,
                               proxy_batches=2, workers=0, val_images=4, top=1)
    run = run_sensitivity(config)
    out = tmp_path / "sens"
    assert {"sensitivity.json", "sensitivity.png", "ignore.txt"} <= {p.name for p in
                                                                    out.iterdir()}
    assert run.ranking[0][0] == FRAGILE
    assert run.ranking[0][1] > 10 * abs(run.ranking[1][1])  # far above the rest
    lines = (out / "ignore.txt").read_text().splitlines()
    model, summary, _ = quantize_yolo(load_float_checkpoint(tiny_yolo).fuse(), ignore=lines)
    ignored = {path for path in summary.ignored_paths if not path.startswith("model.77")}
    assert ignored == {"model.4.conv"}  # that layer float, and nothing else but the head
    again = run_sensitivity(config)  # everything is already computed: same ranking
    assert again.ranking == run.ranking


def test_with_ptq_its_own_profile_labels_the_exports(tiny_yolo, tiny_data, tmp_path):
    from yoloq.export import read_metadata

    ptq = fragile_checkpoint(tiny_yolo, tmp_path / "ptq_ort.pt", profile="ort")
    config = SensitivityConfig(weights=str(tiny_yolo), data=str(tiny_data), ptq=str(ptq),
                               out=str(tmp_path / "sens"), mode="proxy", batch=4,
                               proxy_batches=1, workers=0, val_images=4, target_drop=100)
    run = run_sensitivity(config)  # --profile is trt by default: the checkpoint's wins
    assert run.search is not None and run.search.fallback == []
    assert read_metadata(tmp_path / "sens" / "mixed.onnx")["profile"] == "ort"
    with pytest.raises(Exception, match="unknown calibration method 'minmax'"):
        SensitivityConfig(weights="demo", data="demo", method="minmax")


def test_fragile_layer_ranks_first_by_map(demo_subset):
    """mAP mode needs a model that detects something: the shipped demo model."""
    from yoloq.data import create_calibration_loader, create_val_loader, load_data_config
    from yoloq.data.dataset import load_split
    from yoloq.evaluate import evaluate
    from yoloq.models.registry import load_model

    data = load_data_config(demo_subset)
    val = load_split(data, "val")
    model = load_model("demo").fuse()
    quantize_yolo(model)
    calibrate(model, create_calibration_loader(load_split(data, "train"), 16, 320, 8),
              method="max", show_progress=False)
    quantizer = model.model[4].conv.weight_quantizer  # untied, as in `quantized` above
    quantizer.set_amax(quantizer.amax * 0.02)
    loader = create_val_loader(replace(val, records=val.records[:32]), 320, 16, 32)

    def measure():
        with torch.inference_mode():
            return evaluate(lambda x: model(x)[0], loader, progress=False).map50_95

    images = next(iter(create_calibration_loader(load_split(data, "train"), 16, 320, 8)))[0]

    def regroup(groups):
        return calibrate_groups(model, [images], groups, "max", show_progress=False)

    groups = yolo_units(model, regroup=regroup, only=first_layers(6))
    scores = score_units(groups, measure, ResultsStore(demo_subset.parent / "s.json", {}),
                          baseline=measure(), show_progress=False)
    assert rank(scores)[0][0] == FRAGILE and scores[FRAGILE] > 0.05

    # The search in model order (the fragile layer fifth), to a target it cannot reach:
    # each layer is kept float only where its gain's paired interval excludes 0, so
    # exactly the fragile one, though others may gain a little by chance.
    def reading():
        with torch.inference_mode():
            result = evaluate(lambda x: model(x)[0], loader, progress=False)
        return Measurement(result.map50_95, result)

    search = search_fallback(groups, list(groups), reading, float_map=1.0, target_drop=0.0,
                             max_layers=6, show_progress=False, judge=significant_gain)
    assert search.fallback == [FRAGILE]
    fragile_step = next(step for step in search.history if step["layer"] == FRAGILE)
    assert fragile_step["gain_interval"][0] > 0 and fragile_step["gain"] > 0.05
    assert all(step["gain_interval"][0] <= 0 for step in search.history if not step["kept_float"])


def test_the_algorithm_ranks_a_broken_unit_first_on_a_non_yolo_model(tmp_path):
    """ResNet-18 from torchvision: units by top-level block, the plain output error as the
    measure; the block whose input range was cut to 1% ranks first."""
    import torchvision

    from yoloq.quant import QuantConfig, quantize
    from yoloq.sensitivity import squared_error, units_by_path

    torch.manual_seed(0)
    model, _ = quantize(torchvision.models.resnet18(weights=None).eval(), QuantConfig())
    images = torch.rand(4, 3, 64, 64)
    calibrate(model, [images], method="max", show_progress=False)
    broken = model.layer3[0].conv1.input_quantizer
    broken.set_amax(broken.amax * 0.01)
    units = units_by_path(model, depth=1)
    assert list(units) == ["conv1", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool",
                          "fc"]
    measure = output_error_measure(model, [images], squared_error)
    scores = score_units(units, measure, ResultsStore(tmp_path / "s.json", {}),
                         baseline=measure(), show_progress=False)
    assert rank(scores)[0][0] == "layer3"
    assert scores["layer3"] > 10 * max(s for unit, s in scores.items() if unit != "layer3")


def test_a_results_file_of_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "sensitivity.json"
    store = ResultsStore(path, {"a": 1})
    store.record("model.1", 0.5)
    assert json.loads(path.read_text())["schema_version"] == 2
    assert ResultsStore(path, {"a": 1}).scores == {"model.1": 0.5}  # resumes
    path.write_text(json.dumps({**json.loads(path.read_text()), "schema_version": 9}))
    with pytest.raises(Exception, match="schema_version 9 is newer"):
        ResultsStore(path, {"a": 1})


def test_two_processes_split_the_units_and_a_rerun_keeps_finished_ones(
        tiny_yolo, tiny_data, tmp_path):
    """torchrun with 2 gloo processes scores what one process scores; a shard left by an
    interrupted run is taken up, its units not scored again (a planted score survives)."""
    ptq = fragile_checkpoint(tiny_yolo, tmp_path / "ptq.pt")
    settings = dict(weights=str(tiny_yolo), data=str(tiny_data), ptq=str(ptq), mode="proxy",
                    batch=4, proxy_batches=1, workers=0, val_images=4, top=1)
    alone = run_sensitivity(SensitivityConfig(out=str(tmp_path / "one"), **settings))
    one = json.loads((tmp_path / "one" / "sensitivity.json").read_text())
    out = tmp_path / "two"
    out.mkdir()
    planted = alone.ranking[-1][0]  # rank 1's unit or rank 0's: every rank reads every shard
    shard = {**one, "reference": {}, "scores": {planted: 12345.0}}
    (out / "sensitivity.rank1.json").write_text(json.dumps(shard))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "yoloq", "sensitivity", "--out", str(out),
               "--weights", settings["weights"], "--data", settings["data"], "--ptq",
               settings["ptq"], "--mode", "proxy", "--batch", "4", "--proxy-batches", "1",
               "--workers", "0", "--val-images", "4", "--top", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    merged = json.loads((out / "sensitivity.json").read_text())
    assert not list(out.glob("sensitivity.rank*.json"))  # merged, then removed
    assert merged["scores"].pop(planted) == 12345.0
    expected = {name: score for name, score in one["scores"].items() if name != planted}
    assert merged["scores"].keys() == expected.keys()
    for name, score in expected.items():
        assert merged["scores"][name] == pytest.approx(score, rel=1e-4, abs=1e-12)
