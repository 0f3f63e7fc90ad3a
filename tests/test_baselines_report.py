"""Baselines beside the front (``RUN/baselines.json``, ``bench/baselines.py``): the report overlays
them, ``frontier front`` lists them, a malformed file is one line, and each point's count of the
front trials that dominate it follows the front's noise rule.

The run folders are made here (``trials.csv``, ``front.json`` by :func:`write_results`), and the
pages are rendered by the CLI itself; ``bench/baselines.py --smoke`` (tests/test_bench_smoke.py)
writes a real file from a real run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from search.cli import main
from search.results.baselines import dominated_by, read_baselines
from search.results.files import write_results
from trainables.layout import RunFolder
from trainables.objectives import accuracy_error

NAMES, DIRECTIONS = ["accuracy", "size_bytes", "latency_ms"], ["max", "min", "min"]
TRIALS = [  # accuracy, bytes, ms: t0 and t1 on the front, t2 dominated by both
    (0.95, 400_000, 0.30), (0.90, 100_000, 0.20), (0.85, 500_000, 0.40)]
POINTS = [  # t0 and t1 dominate the first; nothing dominates the second (smallest of all)
    {"label": "tp-uniform-50+int8", "how": "Torch-Pruning uniform 50%, fine-tuned, ONNX Runtime INT8",
     "accuracy": 0.80, "size_bytes": 600_000, "latency_ms": 0.50, "accuracy_n": 1000, "latency_iqr_ms": 0.01},
    {"label": "dense+int8", "how": "the reference model, ONNX Runtime INT8",
     "accuracy": 0.95, "size_bytes": 50_000, "latency_ms": 0.25}]


def make_run(run_dir: Path, baselines: object | None = None) -> Path:
    """A finished run of three ok trials; ``baselines``: what ``baselines.json`` holds (a str as it is)."""
    rows = [{"trial_id": f"t{i}", "status": "ok", "pipeline": "D|T|B", "order": "none", "sparsity": 0.0,
             **dict(zip(NAMES, values)), **accuracy_error(values[0], 1000), "latency_iqr_ms": 0.002}
            for i, values in enumerate(TRIALS)]
    write_results(run_dir, rows, NAMES, DIRECTIONS, {r["trial_id"]: {"steps": []} for r in rows})
    (run_dir / "spec.yaml").write_text("name: made\n")
    if baselines is not None:
        text = baselines if isinstance(baselines, str) else json.dumps(baselines)
        RunFolder(run_dir).baselines.write_text(text)
    return run_dir


def plotted(page: str) -> list[dict]:
    """The plotly traces of the page's front figure (its ``Plotly.newPlot`` data)."""
    start = page.index('id="plot-front"')
    call = page.index("Plotly.newPlot(", start)
    decoder = json.JSONDecoder()
    data, _ = decoder.raw_decode(page, page.index("[", page.index(",", call)))
    return data


def test_the_report_overlays_the_baselines(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = make_run(tmp_path / "run", {"version": 1, "versions": {"onnxruntime": "x"}, "points": POINTS})
    out = tmp_path / "front.html"
    assert main(["front", str(run), "--html", str(out)]) == 0
    page = out.read_text()
    traces = [t for t in plotted(page) if t.get("name") == "baseline"]
    assert len(traces) == 4  # the 3-D front and its three projections
    assert all(t["customdata"] == ["tp-uniform-50+int8", "dense+int8"] for t in traces)
    assert all("baseline tp-uniform-50+int8" in t["text"][0] for t in traces)
    table = page[page.index('id="baselines-table"'):]
    assert re.search(r'data-baseline="tp-uniform-50\+int8">.*?<td>2 of 2</td>', table)
    assert re.search(r'data-baseline="dense\+int8">.*?<td>0 of 2</td>', table)
    printed = capsys.readouterr()
    assert "baselines" in printed.out and "2 of 2" in printed.out and printed.err == ""


def test_no_file_leaves_the_report_as_it_was(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = make_run(tmp_path / "run")
    out = tmp_path / "front.html"
    assert main(["front", str(run), "--html", str(out)]) == 0
    page = out.read_text()
    assert 'id="baselines"' not in page and not [t for t in plotted(page) if t.get("name") == "baseline"]
    assert "baselines" not in capsys.readouterr().out


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not readable JSON"),
    ([1, 2], "must be an object with a 'points' list"),
    ({"points": [{**POINTS[0], "latency_ms": "fast"}]}, "points[0].latency_ms must be a finite number, got 'fast'"),
    ({"points": [{k: v for k, v in POINTS[1].items() if k != "label"}]}, "points[0].label must be a non-empty string"),
])
def test_a_malformed_file_is_one_line_and_the_report_is_still_written(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                      content: object, problem: str) -> None:
    run = make_run(tmp_path / "run", content)
    out = tmp_path / "front.html"
    assert main(["front", str(run), "--html", str(out)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(RunFolder(run).baselines) in err[0] and problem in err[0], err
    assert "Traceback" not in err[0]
    page = out.read_text()
    assert 'id="plot-front"' in page and 'id="baselines"' not in page


def test_dominated_by_counts_front_trials_under_the_noise_rule(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", {"points": POINTS})
    points, _ = read_baselines(run)
    frame = pd.read_csv(RunFolder(run).trials_csv, dtype={"trial_id": str})
    summary = json.loads(RunFolder(run).front_json.read_text())
    assert [t["trial_id"] for t in summary["trials"]] == ["t0", "t1"]
    assert dominated_by(points, frame, summary)["dominated_by"].tolist() == [2, 0]
    # faster than t1 only within the two latencies' spreads, and less accurate beyond the error bars: dominated
    near = pd.DataFrame([{"accuracy": 0.85, "size_bytes": 100_000, "latency_ms": 0.198, "accuracy_n": 1000,
                          "accuracy_se": accuracy_error(0.85, 1000)["accuracy_se"], "latency_iqr_ms": 0.002}])
    assert dominated_by(near, frame, summary)["dominated_by"].tolist() == [1]
    # faster beyond the combined spread (each at least 2% of its latency): nothing on the front dominates it
    assert dominated_by(near.assign(latency_ms=0.19), frame, summary)["dominated_by"].tolist() == [0]
