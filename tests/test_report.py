import json

import pytest
from PIL import Image
from rich.console import Console

from yoloq.errors import YoloqError
from yoloq.report import Report, ReportRow, plot_report, print_report, report_markdown


def sample_report() -> Report:
    rows = [
        ReportRow("demo", "torch", None, "fp32", 0.4567, 0.7001),
        ReportRow("demo", "onnxruntime", None, "fp32", 0.4560, 0.7000, {1: 10.0, "8": 60.0}),
        ReportRow(
            "demo",
            "onnxruntime",
            "ort",
            "int8",
            0.4541,
            0.6990,
            {"1": 5.5, "8": 33.0},
            notes="ptq | entropy",
        ),  # fmt: skip
        ReportRow("demo", "tensorrt", "trt", "int8", None, None, {"1": 0.8}),
    ]
    return Report(rows=rows, config={"calib": "entropy", "batches": 16})


def test_json_round_trip(tmp_path):
    report = sample_report()
    folder = report.save(tmp_path / "run")
    data = json.loads((folder / "report.json").read_text())
    assert data["rows"][0]["map50_95"] == 0.4567  # fractions, as the API holds them
    assert data["rows"][1]["latency_ms"] == {"1": 10.0, "8": 60.0}  # int keys -> str
    assert data["machine"]["cpu_count"] >= 1 and "torch" in data["machine"]
    loaded = Report.load(folder)
    assert loaded == report
    assert Report.load(folder / "report.json") == report
    assert not list(folder.glob("*.tmp"))


def test_markdown_shows_points_drop_and_latency_ratio():
    markdown = report_markdown(sample_report())
    header = next(line for line in markdown.splitlines() if line.startswith("| model"))
    assert "drop" in header and "ms b1" in header and "x float b8" in header
    lines = [line for line in markdown.splitlines() if line.startswith("| demo")]
    cells = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]
    torch_row, ort_float, ort_int8, trt_int8 = cells
    assert torch_row[4:7] == ["45.67", "0.00", "70.01"]
    # The drop is against the first fp32 row of the same backend: 45.60 - 45.41.
    assert ort_int8[4:7] == ["45.41", "0.19", "69.90"]
    assert ort_float[7:11] == ["10.00", "1.00x", "60.00", "1.00x"]
    assert ort_int8[7:11] == ["5.50", "0.55x", "33.00", "0.55x"]
    assert ort_int8[-1] == "ptq \\| entropy"  # a pipe in the notes does not break the table
    assert trt_int8[4:9] == ["-", "-", "-", "0.80", "-"]  # no float TensorRT row to compare


def test_print_report_renders_the_same_numbers():
    console = Console(record=True, width=200)
    print_report(sample_report(), console)
    output = console.export_text()
    assert "45.41" in output and "0.19" in output and "0.55x" in output


def test_plot_is_a_png(tmp_path):
    path = plot_report(sample_report(), tmp_path / "report.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 300


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(backend="tflite"), "backend 'tflite'"),
        (dict(precision="int4"), "precision 'int4'"),
        (dict(map50_95=45.67), "not a fraction"),
    ],
)
def test_rows_validate_themselves(fields, message):
    values = dict(model="m", backend="torch", profile=None, precision="fp32") | fields
    with pytest.raises(YoloqError, match=message):
        ReportRow(**values)


def test_load_names_the_bad_file(tmp_path):
    bad = tmp_path / "report.json"
    bad.write_text("{not json")
    with pytest.raises(YoloqError, match="report.json: not a readable yoloq report"):
        Report.load(bad)


def test_a_newer_schema_is_refused_with_its_file_named(tmp_path):
    report = Report(rows=[ReportRow("m", "torch", None, "fp32", 0.5, 0.6)])
    report.save(tmp_path)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["schema_version"] == 2 and Report.load(tmp_path).rows == report.rows
    saved["schema_version"] = 3
    (tmp_path / "report.json").write_text(json.dumps(saved))
    with pytest.raises(YoloqError, match=r"report.json: report schema_version 3 is newer"):
        Report.load(tmp_path)
