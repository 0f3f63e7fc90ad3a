"""`frontier front`'s table: trial ids (what `rerun --trial` takes) and pipelines come out whole at
any terminal width and in a pipe; other columns drop before any cell is cut, and numbers read short
(bytes in MB, milliseconds at three significant digits)."""

from __future__ import annotations

import math
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from search.results.format import byte_size, significant
from search.results.report import load_front, print_front_table
from search.results.files import write_results

# the shapes Ray Tune gives trial ids: 8 hex digits (a searcher's trials), or a prefix and a counter
IDS = ["a1b2c3d4", "2f1ef_00012", "9e8d7c6b", "2f1ef_00007", "0c0ffee0"]
PIPELINES = ["D|50|70|T|80|90|Q|R|B", "D|T|80|90|Q|R|B", "D|50|T|B", "D|T|E90|Q|R|B", "D|T|B"]


def write_run(run_dir: Path) -> list[dict]:
    """A finished run folder as the runner writes it: five trials, every one on the front."""
    rows = []
    for i, (trial_id, pipeline) in enumerate(zip(IDS, PIPELINES)):
        rows.append({"trial_id": trial_id, "status": "ok", "pipeline": pipeline, "order": "PBA",
                     "accuracy": 0.9876 - 0.05 * i, "top5": 0.9991, "size_bytes": 44_812_345 / (i + 1),
                     "latency_ms": 12.3456 / (i + 1), "sparsity": 0.1 * i, "real_sparsity": 0.09 * i,
                     "latency_backend": "onnxruntime", "latency_precision": "fp32", "latency_device": "cpu",
                     "latency_batch": 1, "latency_p90_ms": 13.1 / (i + 1), "throughput_ips": 1234.5 * (i + 1),
                     "param.s1": 0.5})
    write_results(run_dir, rows, ["accuracy", "size_bytes", "latency_ms"], ["max", "min", "min"], {})
    return rows


def render(run_dir: Path, width: int | None) -> str:
    """The table as `frontier front` prints it: on a terminal ``width`` wide, or to a pipe (None)."""
    frame, summary = load_front(run_dir)
    if width is None:
        console = Console(file=StringIO())  # not a terminal: what a pipe or a log gets
    else:
        console = Console(file=StringIO(), width=width, force_terminal=True, color_system=None)
    print_front_table(frame, summary, console)
    return console.file.getvalue()


@pytest.mark.parametrize("width", [60, 80, 120, None], ids=["60", "80", "120", "piped"])
def test_ids_and_pipelines_are_whole_at_any_width(width: int | None, tmp_path: Path) -> None:
    rows = write_run(tmp_path)
    text = render(tmp_path, width)
    lines = text.splitlines()
    assert "…" not in text, text
    if width is not None:
        assert max(map(len, lines)) <= width, text
    for row in rows:
        line = next((line for line in lines if f" {row['trial_id']} " in line), None)
        assert line is not None, (row["trial_id"], text)
        assert f" {row['pipeline']} " in line, (row["pipeline"], text)
        assert f" {row['accuracy']:.4f} " in line, text  # the first objective is kept whole too


@pytest.mark.parametrize("width", [80, None], ids=["80", "piped"])
def test_the_objectives_outlast_the_other_columns(width: int | None, tmp_path: Path) -> None:
    write_run(tmp_path)
    header = next(line for line in render(tmp_path, width).splitlines() if "trial" in line and "pipeline" in line)
    assert all(name in header for name in ("accuracy", "size", "latency_ms")), header
    wide = width is None
    assert ("real_sparsity" in header) == wide, header  # a pipe gets every column; 80 columns do not


def test_piped_output_is_as_wide_as_the_table(tmp_path: Path) -> None:
    write_run(tmp_path)
    text = render(tmp_path, None)
    assert max(map(len, text.splitlines())) > 80, "a pipe is not squeezed into 80 columns"
    assert "onnxruntime fp32" in text


@pytest.mark.parametrize(("value", "text"), [(44_812_345, "44.8 MB"), (7_466_667, "7.47 MB"), (512_000, "512 kB"),
                                             (1_500_000_000, "1.50 GB"), (900, "900 B")])
def test_bytes_read_in_decimal_units(value: float, text: str) -> None:
    assert byte_size(value) == text


@pytest.mark.parametrize(("value", "text"), [(12.3456, "12.3"), (6.0, "6.00"), (0.0123, "0.0123"), (99.96, "100"),
                                             (1234.5, "1,234"), (math.pi * 100, "314")])
def test_milliseconds_read_at_three_significant_digits(value: float, text: str) -> None:
    assert significant(value) == text


def test_a_run_without_ok_trials_shows_an_empty_table(tmp_path: Path) -> None:
    write_results(tmp_path, [{"trial_id": "a1b2c3d4", "status": "failed", "pipeline": "D|T|B", "error": "boom"}],
                  ["accuracy", "size_bytes", "latency_ms"], ["max", "min", "min"], {})
    assert "front: 0 of 0 ok trials (1 finished)" in render(tmp_path, 80)


def test_the_reference_trial_is_shown_marked_even_off_the_front(tmp_path: Path) -> None:
    rows = write_run(tmp_path / "on")
    dense = {**rows[0], "trial_id": "dense000", "pipeline": "D|T|B", "order": "none", "accuracy": 0.5,
             "size_bytes": 9e9, "latency_ms": 99.0, "reference": True}  # dominated by every other trial
    write_results(tmp_path / "run", [*rows, dense], ["accuracy", "size_bytes", "latency_ms"], ["max", "min", "min"], {})
    frame, summary = load_front(tmp_path / "run")
    assert "dense000" not in {t["trial_id"] for t in summary["trials"]}
    out = render(tmp_path / "run", None)
    lines = [line for line in out.splitlines() if any(i in line for i in [*IDS, "dense000"])]
    assert "dense000" in lines[-1] and "D|T|B (reference)" in lines[-1], out  # last, and marked
    assert "front: 5 of 6 ok trials" in out
