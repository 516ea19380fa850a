import subprocess
import sys

from yoloq.cli import main
from yoloq.demo import run_demo


def test_help_lists_the_commands(capsys):
    assert main([]) == 0
    assert "demo" in capsys.readouterr().out


def test_demo_runs_every_stage(tmp_path):
    results = run_demo(tmp_path, size=64)
    assert results["quantizers"] == 16
    assert (tmp_path / "demo_int8.onnx").is_file()
    assert results["onnx_qdq_pairs"] >= 11
    assert results["int8_vs_float_relative_error"] < 0.05
    assert results["ort_vs_torch_steps"] < 3


def test_console_script_entry_point():
    result = subprocess.run([sys.executable, "-m", "yoloq", "--help"], capture_output=True,
                            text=True, check=True)
    assert "demo" in result.stdout
