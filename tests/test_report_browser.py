"""The HTML report in a real browser: headless Chromium, JavaScript on (issue 18).

A made-up run folder (trials.csv, front.json, spec.yaml with a select, and a real Optuna journal
for the importances) is rendered by ``frontier front --html``; Chromium's DOM after the scripts ran
must hold one plotted point per trial in every 2-D projection, an accuracy error bar per trial in
each projection with accuracy on an axis, one table row per trial with its accuracy's 95% interval, no
JavaScript error, and a screenshot that is not blank.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainables.layout import RunFolder
from search.cli import main
from search.results.files import write_results
from search.results.rows import mark_feasible
from tests.chromium import chromium, chromium_missing, rendered_dom, screenshot
from trainables.objectives import accuracy_error, wilson_interval

NAMES, DIRECTIONS = ["accuracy", "size_bytes", "latency_ms"], ["max", "min", "min"]
TRIALS = 12
TEST_IMAGES = 600


def make_run(run_dir: Path) -> pd.DataFrame:
    """A finished run of ``TRIALS`` ok trials, two workers, a select on accuracy, and its study."""
    import optuna

    from search.run.study import open_storage

    rng = np.random.default_rng(0)
    run_dir.mkdir(parents=True)
    (run_dir / "spec.yaml").write_text("name: made\nselect: {min_accuracy: 0.3}\n")
    orders = ["PB", "PA", "PBA", "none"]
    rows, plans = [], {}
    storage = open_storage(RunFolder(run_dir).study_journal)
    study = optuna.create_study(study_name="made", storage=storage, directions=["maximize", "minimize", "minimize"])
    for i in range(TRIALS):
        order = orders[i % 4]
        s = float(rng.uniform(0.2, 0.9))
        values = [float(0.95 - 0.5 * s ** 2 + rng.normal(0, 0.02)), float(2e6 * (1 - s) + 1e4),
                  float(0.3 - 0.1 * s + rng.normal(0, 0.01))]
        pipeline = {"PB": f"D|{int(s * 100)}|T|B", "PA": f"D|T|E{int(s * 100)}|B", "PBA": "D|20|T|80|I8|B",
                    "none": "D|T|B"}[order]
        row = {"trial_id": f"t{i:02d}", "status": "ok", "pipeline": pipeline, "order": order,
               **dict(zip(NAMES, values)), "top5": 1.0, "sparsity": s, "real_sparsity": s - 0.01,
               "latency_iqr_ms": 0.004, **accuracy_error(values[0], TEST_IMAGES),
               "precision": "int8" if order == "PBA" else "fp32",
               "seconds.D": 1.5, "seconds.B": 0.4, "cached_stages": "D" if i else "", "time_total_s": 10.0 + i,
               "timestamp": 1_700_000_000 + 8 * i + 10.0 + i, "node_ip": "10.0.0.1", "pid": 100 + i % 2,
               "param.order": order, "param.s": s, "reference": i == 3}  # t03, D|T|B: the dense model as it is
        rows.append(mark_feasible(row, {"min_accuracy": 0.3}))
        plans[row["trial_id"]] = {"steps": []}
        study.add_trial(optuna.trial.create_trial(
            params={"order": order, "s": s}, values=values,
            distributions={"order": optuna.distributions.CategoricalDistribution(orders),
                           "s": optuna.distributions.FloatDistribution(0.1, 0.95)}))
    frame, _ = write_results(run_dir, rows, NAMES, DIRECTIONS, plans)
    return frame


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("report")
    frame = make_run(root / "made")
    out = root / "front.html"
    assert main(["front", str(root / "made"), "--html", str(out)]) == 0
    return out, frame


def test_the_page_is_self_contained_and_says_what_it_shows(page) -> None:
    out, frame = page
    text = out.read_text()
    assert "<script src=" not in text  # plotly is inlined: the page opens offline
    assert "of the reference box" in text and "Noise rule" in text and "1.96 standard errors" in text
    for trial in frame["trial_id"]:
        assert f"frontier rerun {out.parent / 'made'} --trial {trial}" in text
    assert 'id="plot-importances"' in text and 'id="plot-timeline"' in text and 'id="plot-hypervolume"' in text


@pytest.mark.skipif(chromium() is None, reason=chromium_missing())
def test_the_page_renders_every_trial_without_a_javascript_error(page, tmp_path: Path) -> None:
    out, frame = page
    dom = rendered_dom(out)
    errors = re.search(r'<pre id="js-errors"[^>]*>(.*?)</pre>', dom, re.S)
    assert errors is not None and errors.group(1).strip() == "", errors.group(1)[:2000] if errors else dom[:500]
    # every 2-D projection of the front plots one point per trial (plotly draws them as SVG paths)
    front = dom[dom.index('id="plot-front"'):dom.index('id="plot-hypervolume"')]
    subplots = re.split(r'<g class="subplot ', front)[1:]
    counts = [len(re.findall(r'class="point"', part.split('<g class="subplot ')[0])) for part in subplots]
    counts = [c for c in counts if c]
    assert counts == [TRIALS] * 3, counts
    # accuracy carries its error bar (the 95% Wilson interval) where it is an axis: x of the first two
    bars = [len(re.findall(r'class="xerror"', part.split('<g class="subplot ')[0])) for part in subplots]
    assert [c for c in bars if c] == [TRIALS] * 2 and 'class="yerror"' not in front, bars
    # the reference trial (the dense model as it is) is labelled in each 2-D projection and its table row
    assert len(re.findall(r'class="annotation-text"[^>]*>reference \(dense\)<', front)) == 3, "one per projection"
    assert re.search(r'<tr class="[a-z]+ reference" data-trial="t03">', dom) and "D|T|B (reference)" in dom
    # the 3-D scene was drawn (WebGL canvas) and the other figures rendered
    assert "gl-container" in front or "<canvas" in front
    assert dom.count('class="main-svg"') >= 4
    table = dom[dom.index('id="trials-table"'):]
    assert len(re.findall(r'<tr class="[^"]*" data-trial=', table)) == TRIALS
    for accuracy in frame["accuracy"]:  # each trial's interval in the table
        low, high = wilson_interval(accuracy, TEST_IMAGES)
        assert f">{low:.3f}-{high:.3f}</td>" in table, (accuracy, low, high)
    shot = screenshot(out, tmp_path / "shot.png")
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10, "the screenshot is blank"
    assert (pixels < 128).mean() > 0.005  # ink: text and points, not a white page
