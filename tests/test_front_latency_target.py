"""A trial pruned to a latency target shows the target beside its measured latency, and whether it was
met (measured <= target x LATENCY_TARGET_TOLERANCE), in `frontier front`'s table, its HTML page and
front.json; a trial without a target shows nothing there. Hand-made trials.csv rows, as the runner
writes them (`stage.<slot>.latency_target_ms` from the pruning stage)."""

from __future__ import annotations

import json
import math
import re
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from search.results.files import write_results
from search.results.format import target_text
from search.results.report import load_front, print_front_table
from search.results.report_page import pruning_method, render_page
from search.results.summary import LATENCY_TARGET_TOLERANCE, latency_target
from trainables.layout import RunFolder

NAMES, DIRECTIONS = ["accuracy", "size_bytes", "latency_ms"], ["max", "min", "min"]


def trial(trial_id: str, pipeline: str, accuracy: float, size: float, latency: float, **extra) -> dict:
    return {"trial_id": trial_id, "status": "ok", "pipeline": pipeline, "order": "PA", "accuracy": accuracy,
            "top5": 1.0, "size_bytes": size, "latency_ms": latency, "sparsity": 0.5, "real_sparsity": 0.5,
            "latency_backend": "onnxruntime", "latency_precision": "fp32", **extra}


# four trials, each on the front (accuracy falls as size and latency fall)
ROWS = [
    trial("met00000", "D|T|L40|B", 0.95, 4e6, 3.3, **{"stage.P2.latency_target_ms": 3.1,  # 3.3 <= 3.41: met
                                                       "stage.P2.latency_predicted_ms": 3.0,
                                                       "stage.P2.latency_dense_ms": 7.75, "param.s2.latency": 0.4}),
    trial("miss0000", "D|T|EL30|B", 0.90, 3e6, 2.6, **{"stage.P2.latency_target_ms": 2.3,  # 2.6 > 2.53: missed
                                                        "param.s2.latency": 0.3}),
    trial("plain000", "D|T|50|B", 0.85, 2e6, 2.0),
    trial("two00000", "D|L2ms|T|L1.5ms|B", 0.80, 1e6, 1.6, **{"stage.P1.latency_target_ms": 2.0,
                                                               "stage.P2.latency_target_ms": 1.5}),
]


def write_run(run_dir: Path, rows: list[dict] = ROWS) -> None:
    write_results(run_dir, rows, NAMES, DIRECTIONS, {})


def render(run_dir: Path, width: int | None = None) -> str:
    """The table as a pipe gets it (every column), or a terminal ``width`` wide."""
    frame, summary = load_front(run_dir)
    console = (Console(file=StringIO()) if width is None
               else Console(file=StringIO(), width=width, force_terminal=True, color_system=None))
    print_front_table(frame, summary, console)
    return console.file.getvalue()


def test_the_tolerance_is_ten_percent() -> None:
    assert LATENCY_TARGET_TOLERANCE == pytest.approx(1.10)


@pytest.mark.parametrize(("measured", "met"), [(3.0, True), (3.1, True), (3.1 * 1.10, True), (3.1 * 1.1001, False),
                                               (4.0, False)])
def test_a_target_is_met_within_the_tolerance(measured: float, met: bool) -> None:
    row = pd.Series({"latency_ms": measured, "stage.P2.latency_target_ms": 3.1})
    assert latency_target(row) == {"latency_target_ms": 3.1, "latency_met": met}


def test_the_last_pruning_stage_with_a_target_gives_it() -> None:
    row = pd.Series({"latency_ms": 1.0, "stage.P1.latency_target_ms": 5.0, "stage.P2.2.latency_target_ms": 1.2,
                     "stage.P2.latency_target_ms": 2.0, "stage.P10x.latency_target_ms": 0.1,
                     "stage.P2.latency_predicted_ms": 0.9})
    assert latency_target(row)["latency_target_ms"] == 1.2  # P2.2 follows P2 follows P1
    # a later stage pruned to a sparsity has no target (NaN in trials.csv): the last one that had one counts
    row = pd.Series({"latency_ms": 1.0, "stage.P1.latency_target_ms": 5.0, "stage.P2.latency_target_ms": math.nan})
    assert latency_target(row) == {"latency_target_ms": 5.0, "latency_met": True}


def test_a_trial_without_a_target_or_a_measurement() -> None:
    assert latency_target(pd.Series({"latency_ms": 2.0, "stage.P2.real_sparsity": 0.5})) == {}
    assert latency_target(pd.Series({"stage.P2.latency_target_ms": 2.0})) == {"latency_target_ms": 2.0,
                                                                              "latency_met": None}
    assert target_text(pd.Series({"stage.P2.latency_target_ms": 2.0})) == "2.00 ms"
    assert target_text(pd.Series({"latency_ms": 2.0})) == ""


def test_front_json_keeps_its_fields_and_adds_the_target_for_trials_with_one(tmp_path: Path) -> None:
    write_run(tmp_path)
    stored = json.loads(RunFolder(tmp_path).front_json.read_text())
    trials = {t["trial_id"]: t for t in stored["trials"]}
    assert set(trials) == {r["trial_id"] for r in ROWS}
    plain = set(trials["plain000"])
    assert "latency_target_ms" not in plain and "latency_met" not in plain
    assert plain >= {"trial_id", "pipeline", *NAMES, "precision", "sparsity"}
    for trial_id, target, met in (("met00000", 3.1, True), ("miss0000", 2.3, False), ("two00000", 1.5, True)):
        assert set(trials[trial_id]) == plain | {"latency_target_ms", "latency_met"}
        assert trials[trial_id]["latency_target_ms"] == target and trials[trial_id]["latency_met"] is met
    # and the same from trials.csv read back (`frontier front --json`)
    _, summary = load_front(tmp_path)
    assert {t["trial_id"]: t.get("latency_met") for t in summary["trials"]} == {
        "met00000": True, "miss0000": False, "plain000": None, "two00000": True}


def test_the_table_shows_the_target_beside_the_latency(tmp_path: Path) -> None:
    write_run(tmp_path)
    lines = render(tmp_path).splitlines()
    header = next(line for line in lines if "trial" in line and "pipeline" in line)
    assert re.search(r"latency_ms\s*┃\s*target\s*┃", header), header  # right beside the measured latency

    def line(trial_id: str) -> str:
        return next(x for x in lines if trial_id in x)

    assert re.search(r"3\.30\s*│\s*3\.10 ms ✓\s*│", line("met00000")), line("met00000")
    assert re.search(r"2\.60\s*│\s*2\.30 ms ✗\s*│", line("miss0000")), line("miss0000")
    assert re.search(r"1\.60\s*│\s*1\.50 ms ✓\s*│", line("two00000")), line("two00000")
    assert re.search(r"2\.00\s*│\s*│", line("plain000")), line("plain000")  # nothing for a trial without a target
    assert "ms ✓" not in line("plain000") and "ms ✗" not in line("plain000")


@pytest.mark.parametrize("width", [100, 120])
def test_on_a_narrow_terminal_the_target_outlasts_the_other_columns(width: int, tmp_path: Path) -> None:
    write_run(tmp_path)
    lines = render(tmp_path, width).splitlines()
    header = next(line for line in lines if "trial" in line and "pipeline" in line)
    assert "target" in header and "real_sparsity" not in header, header
    assert "3.10 ms ✓" in next(x for x in lines if "met00000" in x)


def test_a_run_without_targets_has_no_target_column(tmp_path: Path) -> None:
    write_run(tmp_path, [ROWS[2]])
    header = next(line for line in render(tmp_path).splitlines() if "trial" in line and "pipeline" in line)
    assert "target" not in header and "latency_ms" in header


def test_the_html_page_shows_the_target_in_the_table_and_the_hover(tmp_path: Path) -> None:
    write_run(tmp_path)
    frame, summary = load_front(tmp_path)
    page = render_page(frame, summary, None)
    head = re.search(r'<table class="trials".*?</thead>', page, re.S)[0]
    headers = re.findall(r"<th>(.*?)</th>", head)
    column = headers.index("latency target")
    assert headers[column - 1] == "latency_ms"
    rows = dict(re.findall(r'<tr class="[^"]*" data-trial="([^"]+)">(.*?)</tr>', page, re.S))
    cells = {t: re.findall(r'<td data-v="([^"]*)">(.*?)</td>', body) for t, body in rows.items()}
    assert cells["met00000"][column] == ("3.1", "3.10 ms ✓")
    assert cells["miss0000"][column] == ("2.3", "2.30 ms ✗")
    assert cells["plain000"][column] == ("", "")
    assert "latency target: 3.1 ms, met (within 10% above it)" in page
    assert "latency target: 2.3 ms, missed" in page


@pytest.mark.parametrize(("pipeline", "method"), [("D|T|L40|B", "gradual"), ("D|L2ms|T|L1.5ms|B", "gradual"),
                                                  ("D|T|EL40|B", "epruning"), ("D|T|EL2.5ms|Q|B", "epruning"),
                                                  ("D|T|E50|B", "epruning"), ("D|T|B", "none")])
def test_the_page_knows_latency_labels_pruning_method(pipeline: str, method: str) -> None:
    assert pruning_method(pipeline) == method
