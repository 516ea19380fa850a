import subprocess
import sys

from yoloq.cli import main


def test_help_lists_the_commands_in_pipeline_order(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    commands = ["data", "ptq", "export", "eval", "bench", "predict", "demo"]
    positions = [out.index(f"    {name} ") for name in commands]
    assert positions == sorted(positions)


def test_console_script_entry_point():
    result = subprocess.run([sys.executable, "-m", "yoloq", "--help"], capture_output=True,
                            text=True, check=True)
    assert "demo" in result.stdout
