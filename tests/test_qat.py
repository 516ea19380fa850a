import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from yoloq.cli import main
from yoloq.errors import YoloqError
from yoloq.graph import quantizer_ties
from yoloq.models.quantized import load_quantized
from yoloq.runtime import get_backend
from yoloq.workflows import qat as qat_workflow
from yoloq.workflows.config import QatConfig, lr_at, parse_lr_schedule
from yoloq.workflows.qat import resume_qat, run_qat
from yoloq.workflows.training import (
    EpochSampler,
    make_teacher,
    measure_supervision_loss,
    reached_layers,
    supervised_layers,
)

# --- settings and pure helpers ------------------------------------------------------------


def test_lr_schedule_is_piecewise_constant_by_epoch():
    schedule = parse_lr_schedule("0:1e-6, 3:1e-5,8:1e-6")
    assert schedule == ((0, 1e-6), (3, 1e-5), (8, 1e-6))
    assert [lr_at(schedule, e) for e in (0, 2, 3, 7, 8, 20)] == [1e-6, 1e-6, 1e-5, 1e-5, 1e-6, 1e-6]


@pytest.mark.parametrize(
    "text", ["1:1e-5", "0:1e-5,0:1e-4", "0:1e-5,4:1,2:1", "0:x", "0", "0:-1e-5", ""]
)
def test_bad_lr_schedules_are_user_errors(text):
    with pytest.raises(YoloqError, match="lr-schedule"):
        parse_lr_schedule(text)


def test_config_round_trips_and_validates(tmp_path):
    config = QatConfig(
        weights="demo",
        data="demo",
        epochs=3,
        bench_batches=[1],
        lr_schedule="0:1e-5,2:1e-6",
        loss="both",
    )
    config.save(tmp_path)
    assert QatConfig.load(tmp_path / "config.yaml") == config
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["bench_batches"] == [1]
    for bad in (
        {"loss": "kl"},
        {"epochs": 0},
        {"supervision_stride": 0},
        {"optimizer": "lion"},
        {"profile": "tflite"},
        {"lr_schedule": "2:1e-5"},
    ):
        with pytest.raises(YoloqError):
            QatConfig(weights="demo", data="demo", **bad)
    with pytest.raises(YoloqError, match="unknown QAT settings"):
        QatConfig.from_dict({"weights": "demo", "data": "demo", "lr": 1e-5})


def test_epoch_sampler_splits_one_order_across_ranks_and_follows_the_epoch():
    single = list(EpochSampler(10, 14, seed=3))
    ranks = [list(EpochSampler(10, 7, seed=3, rank=r, world=2)) for r in (0, 1)]
    assert single[0::2] == ranks[0] and single[1::2] == ranks[1]
    assert sorted(single[:10]) == list(range(10))  # whole passes over the images
    sampler = EpochSampler(10, 14, seed=3)
    sampler.set_epoch(1)
    assert list(sampler) != single
    sampler.set_epoch(0)
    assert list(sampler) == single


def test_supervision_reaches_every_layer_but_the_head(tiny_yolo):
    from yoloq.models import load_model

    model = load_model(str(tiny_yolo)).fuse()
    head = len(model.model) - 1
    assert reached_layers(model, set(supervised_layers(model, 1))) == set(range(head))
    # Every 4th layer: the layers that only feed the head are not reached.
    reached = reached_layers(model, set(supervised_layers(model, 4)))
    assert 0 in reached and head not in reached and max(reached) < head


def test_training_steps_distill_a_quantized_head_toward_the_teacher(tiny_yolo, tiny_data):
    """The layer MSE stops before the detection layer; the head term reaches it: after
    the quantized head's biases are pushed off the teacher's by 0.3, a few steps bring
    its raw outputs, in sigmoid space, back toward the float model's."""
    from types import SimpleNamespace

    from yoloq.models import load_model
    from yoloq.models.quantized import quantize_yolo
    from yoloq.quant import calibrate
    from yoloq.workflows.training import Distributed, build_trainer
    from yoloq.workflows.training.supervision import head_distillation_loss
    from yoloq.workflows.training.train import train_step

    torch.manual_seed(0)
    student = load_model(str(tiny_yolo)).fuse().eval()
    quantize_yolo(student, "ort", keep_head_float=False)
    images = torch.rand(4, 3, 128, 128)
    calibrate(student, [images], method="max", show_progress=False)
    config = tiny_config(tiny_yolo, tiny_data, "unused", lr_schedule="0:1e-2")
    trainer = build_trainer(student, config, Distributed(), 128)  # the teacher: as it is now
    with torch.no_grad():
        for conv in student.model[-1].m:
            conv.bias += 0.3

    def head_error():
        student.eval()
        with torch.no_grad():
            error = head_distillation_loss(student(images)[1], trainer.teacher(images)[1])
        student.train()  # as train_epoch leaves it for train_step
        return float(error)

    before = head_error()
    batch = SimpleNamespace(images=images, targets=torch.zeros(0, 6))
    losses = [train_step(trainer, batch) for _ in range(15)]
    assert losses[0]["head"] > 0
    after = head_error()
    assert after < 0.5 * before, (before, after)


# --- runs on the tiny model and data ------------------------------------------------------


def tiny_config(tiny_yolo, tiny_data, out, **overrides):
    settings = dict(
        weights=str(tiny_yolo),
        data=str(tiny_data),
        out=str(out),
        epochs=2,
        iters=3,
        batch=4,
        calib_images=8,
        method="max",
        lr_schedule="0:1e-3,1:1e-4",
        bench_batches=(),
        workers=0,
        seed=5,
    )
    return QatConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def tiny_run(tiny_yolo, tiny_data, tmp_path_factory):
    return run_qat(tiny_config(tiny_yolo, tiny_data, tmp_path_factory.mktemp("qat") / "a"))


def state(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_qat_writes_checkpoints_onnx_and_report(tiny_run):
    names = {path.name for path in tiny_run.out.iterdir()}
    assert {
        "config.yaml",
        "ptq.pt",
        "best.pt",
        "last.pt",
        "qat_trt.onnx",
        "float.onnx",
        "report.json",
        "report.md",
    } <= names
    assert not [name for name in names if name.endswith(".tmp")]
    report = json.loads((tiny_run.out / "report.json").read_text())
    # The float and QAT exports on ONNX Runtime, and on OpenVINO where it is installed.
    openvino = ["", "QAT"] if get_backend("openvino").unavailable() is None else []
    assert [row["notes"].split(",")[0] for row in report["rows"]] == [
        "float",
        "PTQ",
        "QAT",
        "",
        "QAT",
        *openvino,
    ]
    assert len(report["config"]["history"]) == 2
    history = tiny_run.state.history
    assert [h["epoch"] for h in history] == [0, 1] and [h["lr"] for h in history] == [1e-3, 1e-4]
    best = load_quantized(tiny_run.best)  # the quantized-checkpoint format of ptq.pt
    assert best.profile == "trt"


def test_amax_stays_frozen_and_ties_stay_tied(tiny_run):
    before, after = state(tiny_run.out / "ptq.pt"), state(tiny_run.last)
    amax = [key for key in before if key.endswith(".amax")]
    assert amax and all(torch.equal(before[key], after[key]) for key in amax)
    weights = [key for key in before if key.endswith(".weight")]
    assert any(not torch.equal(before[key], after[key]) for key in weights)  # it trained
    ptq, qat = load_quantized(tiny_run.out / "ptq.pt"), load_quantized(tiny_run.last)
    assert quantizer_ties(ptq) and quantizer_ties(qat) == quantizer_ties(ptq)
    head = f"model.{len(ptq.model) - 1}."  # the head distillation trains it too
    assert any(not torch.equal(before[key], after[key]) for key in weights if key.startswith(head))


def test_resume_reaches_the_weights_of_an_uninterrupted_run(
    tiny_run, tiny_yolo, tiny_data, tmp_path
):
    def interrupt(epoch, record):
        if epoch == 0:
            raise KeyboardInterrupt

    config = tiny_config(tiny_yolo, tiny_data, tmp_path / "b", ptq=str(tiny_run.out / "ptq.pt"))
    with pytest.raises(KeyboardInterrupt):
        run_qat(config, on_epoch_end=interrupt)
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["qat"]["state"]["epoch"] == 0
    resumed = resume_qat(tmp_path / "b")
    assert [h["epoch"] for h in resumed.state.history] == [0, 1]
    expected, got = state(tiny_run.last), state(resumed.last)
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6, msg=key)


def test_resume_refuses_changed_settings_and_missing_runs(tiny_run, tmp_path, capsys):
    assert main(["qat", "--resume", str(tiny_run.out), "--epochs", "5"]) == 2
    assert "drop --epochs" in capsys.readouterr().err
    (tmp_path / "config.yaml").write_text((tiny_run.out / "config.yaml").read_text())
    assert main(["qat", "--resume", str(tmp_path)]) == 2
    assert "no last.pt" in capsys.readouterr().err


def test_two_process_gloo_run_saves_on_rank_zero_only(tiny_run, tmp_path):
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "yoloq",
        "qat",
        "--weights",
        tiny_run.report.config["weights"],
        "--data",
        tiny_run.report.config["data"],
        "--ptq",
        str(tiny_run.out / "ptq.pt"),
        "--epochs",
        "1",
        "--iters",
        "2",
        "--batch",
        "2",
        "--val-images",
        "4",
        "--workers",
        "0",
        "--lr-schedule",
        "0:1e-3",
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert output.count("rank 0: saved last.pt") == 1 and "rank 1: saved" not in output
    assert "batch 2 x 2" in output  # two processes
    names = sorted(path.name for path in out.iterdir())
    assert not [name for name in names if name.endswith(".tmp")]
    assert {"best.pt", "last.pt", "qat_trt.onnx", "report.json"} <= set(names)
    before, after = state(tiny_run.out / "ptq.pt"), state(out / "last.pt")
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith(".weight"))


# --- the demo model on a subset of the benchmark ------------------------------------------


def test_short_qat_lowers_supervision_loss_and_keeps_ptq_map(demo_subset, tmp_path):
    from yoloq.data import create_val_loader, load_data_config, load_split

    config = QatConfig(
        weights="demo",
        data=str(demo_subset),
        out=str(tmp_path),
        epochs=2,
        iters=4,
        batch=8,
        calib_images=32,
        lr_schedule="0:1e-5",
        bench_batches=(),
        workers=0,
    )
    result = run_qat(config)
    reference = result.state.reference
    assert result.state.best_map >= reference["ptq"]["map50_95"] - 0.005
    ptq = load_quantized(tmp_path / "ptq.pt")
    teacher, qat = make_teacher(ptq), load_quantized(result.last)
    val = load_split(load_data_config(demo_subset), "val")
    images = next(iter(create_val_loader(val, 320, 16, 32, rect=False))).images
    before = measure_supervision_loss(ptq, teacher, images)
    after = measure_supervision_loss(qat, teacher, images)
    print(
        f"supervision loss {before:.5f} -> {after:.5f}; mAP float "
        f"{reference['float']['map50_95']:.4f} PTQ {reference['ptq']['map50_95']:.4f} "
        f"QAT {result.state.best_map:.4f}; train {result.state.train_seconds:.1f} s"
    )
    assert after < before


def test_demo_qat_options_reach_the_qat_step_it_runs(tmp_path, monkeypatch):
    import yoloq.cli.demo
    from yoloq.workflows.demo import qat_config

    seen = []
    monkeypatch.setattr(yoloq.cli.demo, "run_demo", seen.append)
    assert main(["demo", "--qat", "--qat-iters", "5", "--out", str(tmp_path)]) == 0
    assert main(["demo", "--out", str(tmp_path)]) == 0
    with_qat, without = seen
    assert with_qat.qat and not without.qat
    config = qat_config(with_qat)  # what the demo's QAT step trains with
    assert (config.epochs, config.iters) == (2, 5)
    assert config.ptq == str(tmp_path / "ptq_trt.pt") and config.out == str(tmp_path)


# --- the PTQ options of `yoloq qat` -------------------------------------------------------


class StopAfterPtq(Exception):
    """Raised where training would start: the PTQ that QAT runs is done and saved."""


@pytest.fixture(scope="module")
def ptq_by_qat(tiny_yolo, tiny_data, tmp_path_factory):
    """{profile: out folder} of `yoloq qat` runs stopped after their PTQ, each with the
    PTQ options that profile takes."""
    ignore_file = tmp_path_factory.mktemp("ignore") / "ignore.txt"
    ignore_file.write_text("# the stem\nmodel\\.0\\.\n")
    options = {"trt": ["--ignore", r"model\.1\.", "--no-rules"],
               "ort": ["--profile", "ort", "--weight-bits", "7", "--ignore-file", str(ignore_file)]}
    outs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(qat_workflow, "build_trainer", stop_after_ptq)
        for profile, extra in options.items():
            outs[profile] = tmp_path_factory.mktemp("qat_ptq") / profile
            argv = ["qat", "--weights", str(tiny_yolo), "--data", str(tiny_data), "--out",
                    str(outs[profile]), "--method", "max", "--calib-images", "4", "--batch",
                    "4", "--workers", "0", *extra]
            with pytest.raises(StopAfterPtq):
                main(argv)
    return outs


def stop_after_ptq(*args, **kwargs):
    raise StopAfterPtq


def test_qat_ptq_options_reach_the_ptq_it_runs(ptq_by_qat):
    trt = torch.load(ptq_by_qat["trt"] / "ptq.pt", weights_only=True)
    assert r"model\.1\.conv$" in trt["quant_config"]["ignore"]  # --ignore
    assert not trt["ties"] and not trt["residual_adds"]  # --no-rules
    assert trt["calibration"]["method"] == "max"
    saved = yaml.safe_load((ptq_by_qat["trt"] / "config.yaml").read_text())
    assert saved["ignore"] == [r"model\.1\."] and saved["rules"] is False
    ort = torch.load(ptq_by_qat["ort"] / "ptq.pt", weights_only=True)
    assert ort["profile"] == "ort" and ort["quant_config"]["weight_bits"] == 7
    assert r"model\.0\.conv$" in ort["quant_config"]["ignore"]  # --ignore-file


def test_ptq_options_given_with_ptq_must_match_it(ptq_by_qat, tiny_yolo, tiny_data, tmp_path,
                                                  capsys):
    ptq = ptq_by_qat["trt"] / "ptq.pt"  # made with --ignore 'model\.1\.' --no-rules
    base = ["qat", "--weights", str(tiny_yolo), "--data", str(tiny_data), "--ptq", str(ptq),
            "--out", str(tmp_path / "out"), "--workers", "0"]
    refused = {
        ("--ignore", r"model\.2\."): ["--ignore keeps model.2.conv float, but the checkpoint "
                                      "quantizes them", "the checkpoint keeps model.1.conv "
                                      "float, which --ignore does not name"],
        ("--ignore", r"model\.1\.", "--profile", "ort", "--weight-bits", "7"):
            ["--weight-bits 7, but the checkpoint has 8-bit weights"],
    }
    for extra, reasons in refused.items():
        assert main([*base, *extra]) == 2
        message = capsys.readouterr().err
        assert f"--ptq {ptq} was made with other PTQ options" in message
        assert all(reason in message for reason in reasons), message
    assert not (tmp_path / "out").exists()  # refused before anything is written
    unused_out = tmp_path / "unused"
    matching = QatConfig(weights=str(tiny_yolo), data=str(tiny_data), ptq=str(ptq),
                         out=str(unused_out), ignore=(r"model\.1\.",), rules=False, weight_bits=8)
    source = qat_workflow.given_ptq_source(matching)  # accepted: the checkpoint's own options
    assert source.profile == "trt"
    with pytest.raises(YoloqError, match="but the checkpoint was made with --no-rules"):
        qat_workflow.given_ptq_source(QatConfig(**{**matching.to_dict(), "rules": True}))


def test_qat_method_is_checked_like_ptq_method(capsys):
    with pytest.raises(YoloqError, match="unknown calibration method 'minmax'"):
        QatConfig(weights="demo", data="demo", method="minmax")
    with pytest.raises(SystemExit) as error:  # before anything loads, with the choices
        main(["qat", "--weights", "demo", "--data", "demo", "--method", "minmax"])
    assert error.value.code == 2 and "invalid choice: 'minmax'" in capsys.readouterr().err


def test_qat_help_names_the_float_model_as_teacher_and_ptq_source(capsys):
    with pytest.raises(SystemExit):
        main(["qat", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "the teacher, and what PTQ quantizes when no --ptq is given" in text
    for option in ("--weight-bits", "--ignore", "--ignore-file", "--no-rules"):
        assert option in text
