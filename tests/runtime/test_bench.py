import json

import pytest
import torch
from tiny_onnx import conv_net, export
from torch import nn

from yoloq.cli import main
from yoloq.console import render_text
from yoloq.errors import YoloqError
from yoloq.runtime.bench import bench_table, benchmark_onnx

FAST = dict(warmup=2, iters=9, show_progress=False)


def test_heavier_model_is_slower_and_stats_are_consistent(onnx_pair):
    light, heavy = onnx_pair
    result = benchmark_onnx([light, heavy], batch_sizes=(1, 4), **FAST)
    assert result.models == (str(light), str(heavy))
    for batch in (1, 4):
        first, second = result.get(light, batch), result.get(heavy, batch)
        assert first.ratio == pytest.approx(1.0)
        assert second.ratio > 1.5  # ~4x the MACs; +-20% noise cannot flip it
        assert second.ratio == pytest.approx(second.median_ms / first.median_ms)
        for stats in (first, second):
            assert len(stats.latencies_ms) == 9
            assert 0 < stats.median_ms <= stats.p90_ms
            assert stats.images_per_s == pytest.approx(1000 * batch / stats.median_ms)
    table = render_text(bench_table(result))
    assert "ratio to light.onnx" in table and "heavy.onnx" in table
    assert json.loads(json.dumps(result.to_dict()))["stats"][0]["batch"] == 1


def test_single_model_has_no_ratio(onnx_pair):
    result = benchmark_onnx([onnx_pair[0]], batch_sizes=(2,), **FAST)
    (stats,) = result.stats
    assert stats.ratio is None and stats.batch == 2
    assert "ratio" not in render_text(bench_table(result))


def test_dynamic_height_and_width_need_img_size(tmp_path):
    axes = {"images": {0: "batch", 2: "height", 3: "width"}}
    path = export(conv_net(4), tmp_path / "dynamic.onnx", torch.zeros(1, 3, 32, 32), axes)
    with pytest.raises(YoloqError, match="dynamic.onnx.*img_size"):
        benchmark_onnx([path], batch_sizes=(1,), **FAST)
    result = benchmark_onnx([path], batch_sizes=(1,), img_size=16, **FAST)
    assert result.get(path, 1).median_ms > 0


def test_rejects_models_without_an_image_input(tmp_path):
    path = export(nn.Linear(10, 2), tmp_path / "linear.onnx", torch.zeros(1, 10), {})
    with pytest.raises(YoloqError, match=r"linear.onnx: expected one float image input"):
        benchmark_onnx([path], batch_sizes=(1,), **FAST)


def test_fixed_batch_cannot_run_another(tmp_path):
    path = export(conv_net(4), tmp_path / "fixed.onnx", torch.zeros(1, 3, 16, 16), {})
    with pytest.raises(YoloqError, match="fixed at 1"):
        benchmark_onnx([path], batch_sizes=(1, 8), **FAST)


def test_cli_compares_with_vs_and_writes_json(onnx_pair, tmp_path, capsys):
    light, heavy = onnx_pair
    out = tmp_path / "bench.json"
    code = main(["bench", str(heavy), "--vs", str(light), "--batch", "1,2", "--warmup", "1",
                 "--iters", "5", "--threads", "1", "--json", str(out)])  # fmt: skip
    assert code == 0
    assert "ratio to light.onnx" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["models"] == [str(light), str(heavy)]  # the baseline first
    assert data["settings"]["threads"] == 1
    assert {(s["batch"], s["ratio"] > 1) for s in data["stats"] if s["model"] == str(heavy)} == {
        (1, True), (2, True)}  # fmt: skip


def test_cli_missing_model_exits_2_naming_it(tmp_path, capsys):
    missing = tmp_path / "nowhere.onnx"
    assert main(["bench", str(missing), "--iters", "1"]) == 2
    assert str(missing) in capsys.readouterr().err


def test_cli_rejects_bad_batch_list(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "m.onnx", "--batch", "1,x"])
    assert exit_info.value.code == 2
    assert "batch sizes like 1,8" in capsys.readouterr().err


def test_a_model_against_itself_keeps_both_series(onnx_pair):
    light = onnx_pair[0]
    result = benchmark_onnx([light, light], batch_sizes=(1,), **FAST)
    assert [len(s.latencies_ms) for s in result.stats] == [9, 9]
    assert 0.5 < result.stats[1].ratio < 2  # the same model: only noise
