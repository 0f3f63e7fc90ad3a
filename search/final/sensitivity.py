"""Weight-sharing sensitivity, the offline analysis of ``frontier sweep`` (quantization paper, Fig.
7/8, 12/13): each layer group shared alone at every centroid count k, its validation and test
accuracy and artifact size recorded (:func:`sensitivity`); :func:`propose_groups` chooses on the
validation accuracy, so the test split stays held out for reporting; :func:`write_sensitivity`
writes the table and its plotly page.

It runs on the driver's machine after a search (:mod:`search.final.sweep`), never inside a trial,
so pandas and plotly stay out of the stages.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from torch import nn
from torch.utils.data import DataLoader

from trainables.compress.artifact import save_artifact
from trainables.compress.clustering import METHODS
from trainables.errors import FrontierError
from trainables.stages.share import CENTROIDS, Centroids, ShareConfig, layer_groups, share
from trainables.train import evaluate


def sensitivity(
    model: nn.Module,
    val: DataLoader,
    test: DataLoader | None = None,
    *,
    ks: Sequence[int] = CENTROIDS,
    groups: Sequence[str] | None = None,
    method: str = "kmeans",
    device: str = "cpu",
) -> pd.DataFrame:
    """Accuracy and artifact size with one group shared at a time, for every k (Fig. 7/8, 12/13).

    Centroid counts are chosen on ``val`` (:func:`propose_groups`); ``test`` is only reported
    beside it, so the accuracy a chosen configuration reports on the test split was not used to
    choose it. ``model`` is left as it is (each row shares a copy, on ``device``).

    Example::

        splits = load_data(spec)
        table = sensitivity(model, loader(splits.val, EVAL_BATCH_SIZE, shuffle=False),
                            loader(splits.test, EVAL_BATCH_SIZE, shuffle=False), ks=(4, 16, 64))
        propose_groups(table, max_drop=0.01)   # {"stem": 64, "layer1": 16, ...}

    Returns:
        A table with columns ``group, k, val_accuracy, test_accuracy, size_bytes``
        (``test_accuracy`` only when ``test`` is given); the first row (group ``none``, k 0) is
        the unshared model.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS} but got {method!r}")
    known = layer_groups(model)
    chosen = list(known) if groups is None else list(groups)
    for g in chosen:
        if g not in known:
            raise FrontierError(f"groups: no layer group '{g}'; this model has {', '.join(known)}")
    base = copy.deepcopy(model).to(device)  # the caller's model stays where it is
    rows = [{"group": "none", "k": 0, **_score(base, val, test, device)}]
    for group in chosen:
        for k in ks:
            trial = copy.deepcopy(base)
            share(trial, ShareConfig(groups={group: k}, method=method))
            rows.append({"group": group, "k": k, **_score(trial, val, test, device)})
    return pd.DataFrame(rows)


def _score(model: nn.Module, val: DataLoader, test: DataLoader | None, device: str) -> dict[str, float]:
    scores = {"val_accuracy": evaluate(model, val, device)["accuracy"]}
    if test is not None:
        scores["test_accuracy"] = evaluate(model, test, device)["accuracy"]
    with tempfile.TemporaryDirectory() as tmp:
        scores["size_bytes"] = save_artifact(model.state_dict(), Path(tmp) / "m.h5")
    return scores


def propose_groups(table: pd.DataFrame, max_drop: float = 0.01) -> dict[str, Centroids]:
    """For each group, the fewest centroids whose validation accuracy stays within ``max_drop``
    of the unshared model's, or ``keep`` when none does. ``test_accuracy`` is never read: the
    test split is for reporting the choice, not for making it."""
    base = float(table.loc[table["group"] == "none", "val_accuracy"].iloc[0])
    proposal: dict[str, Centroids] = {}
    for group, rows in table[table["group"] != "none"].groupby("group", sort=False):
        good = rows[rows["val_accuracy"] >= base - max_drop]
        proposal[str(group)] = int(good["k"].min()) if len(good) else "keep"
    return proposal


def write_sensitivity(table: pd.DataFrame, out_dir: str | Path, title: str = "sensitivity") -> tuple[Path, Path]:
    """Write the table as ``sensitivity.csv`` and a plotly page ``sensitivity.html``: validation
    accuracy (what :func:`propose_groups` chooses on), test accuracy (reported, when the table has
    it) and artifact size against k, one line per group, the unshared model dotted."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv, html = out / "sensitivity.csv", out / "sensitivity.html"
    table.to_csv(csv, index=False)
    base = table[table["group"] == "none"].iloc[0]
    panels = [(key, title) for key, title in (("val_accuracy", "validation accuracy (chooses k)"),
                                              ("test_accuracy", "test accuracy (reported)"),
                                              ("size_bytes", "artifact size (bytes)")) if key in table]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[title for _, title in panels])
    for group, rows in table[table["group"] != "none"].groupby("group", sort=False):
        for col, (key, _) in enumerate(panels, start=1):
            fig.add_trace(go.Scatter(x=rows["k"], y=rows[key], mode="lines+markers", name=str(group),
                                     legendgroup=str(group), showlegend=col == 1), row=1, col=col)
    for col, (key, _) in enumerate(panels, start=1):
        fig.add_hline(y=float(base[key]), line_dash="dot", annotation_text="unshared", row=1, col=col)
        fig.update_xaxes(type="log", title_text="centroids k", row=1, col=col)
    fig.update_layout(title=title)
    fig.write_html(str(html), include_plotlyjs=True, full_html=True)
    return csv, html
