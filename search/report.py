"""``frontier front``: the front of a finished run as a terminal table, JSON, or a plotly page."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from trainables.errors import FrontierError

from .results import front_summary, read_trials

TABLE_COLUMNS = ("pipeline", "accuracy", "top5", "size_bytes", "latency_ms", "sparsity")


def load_front(run_dir: str | Path) -> tuple[pd.DataFrame, dict]:
    """The run's trials and its front, recomputed from ``trials.csv`` under ``front.json``'s objectives."""
    run_dir = Path(run_dir)
    frame = read_trials(run_dir)
    try:
        stored = json.loads((run_dir / "front.json").read_text())
    except (OSError, ValueError):
        raise FrontierError(f"run_dir: '{run_dir}' has no readable front.json") from None
    names = [o["name"] for o in stored["objectives"]]
    directions = [o["direction"] for o in stored["objectives"]]
    return frame, front_summary(frame, names, directions, stored["reference"])


def show_front(run_dir: str | Path, *, html: str | None = None, as_json: bool = False) -> None:
    """Print the front (table or JSON) and optionally write the HTML page."""
    frame, summary = load_front(run_dir)
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        console = Console()
        if not console.is_terminal:  # a pipe or a log: do not squeeze the table into 80 columns
            console = Console(width=140)
        console.print(front_table(frame, summary))
    if html:
        write_html(frame, summary, html)
        if not as_json:
            print(f"wrote {html}")


def front_table(frame: pd.DataFrame, summary: dict) -> Table:
    """The front's trials, best accuracy first, with nominal sparsity beside real bytes and latency."""
    ids = [t["trial_id"] for t in summary["trials"]]
    rows = frame[frame["trial_id"].isin(ids)].sort_values(["accuracy", "size_bytes"], ascending=[False, True])
    ok = int((frame["status"] == "ok").sum())
    table = Table(title=f"front: {len(ids)} of {ok} ok trials ({len(frame)} in all) · "
                        f"hypervolume {summary['hypervolume']:.6g}")
    table.add_column("trial")
    for col in TABLE_COLUMNS:
        table.add_column(col, justify="left" if col == "pipeline" else "right", no_wrap=True)
    for _, row in rows.iterrows():
        table.add_row(str(row["trial_id"]), str(row["pipeline"]), f"{row['accuracy']:.4f}", f"{row['top5']:.4f}",
                      f"{int(row['size_bytes']):,}", f"{row['latency_ms']:.4f}", f"{row['sparsity']:.2f}")
    return table


def write_html(frame: pd.DataFrame, summary: dict, path: str | Path) -> None:
    """A self-contained plotly page: the front in 3-D (for 3 objectives) and every 2-D projection."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = [o["name"] for o in summary["objectives"]]
    ok = frame[frame["status"] == "ok"]
    on_front = ok["trial_id"].isin([t["trial_id"] for t in summary["trials"]])
    pairs = list(itertools.combinations(names, 2))
    scene = len(names) == 3
    cells = ([{"type": "scene"}] if scene else []) + [{"type": "xy"}] * len(pairs)
    cols = 2
    rows = -(-len(cells) // cols)
    grid = [cells[i * cols:(i + 1) * cols] + [None] * (cols - len(cells[i * cols:(i + 1) * cols])) for i in range(rows)]
    titles = (["front in 3-D"] if scene else []) + [f"{y} vs {x}" for x, y in pairs]
    fig = make_subplots(rows=rows, cols=cols, specs=grid, subplot_titles=titles)
    hover = ok.apply(_hover, axis=1)
    for group, mask, color in (("front", on_front, "crimson"), ("dominated", ~on_front, "lightgray")):
        part, text = ok[mask], hover[mask]
        if scene:
            fig.add_trace(go.Scatter3d(x=part[names[0]], y=part[names[1]], z=part[names[2]], mode="markers",
                                       marker={"size": 5, "color": color}, name=group, text=text,
                                       hoverinfo="text", legendgroup=group), row=1, col=1)
        for k, (x, y) in enumerate(pairs, start=1 if scene else 0):
            fig.add_trace(go.Scatter(x=part[x], y=part[y], mode="markers", marker={"color": color, "size": 9},
                                     name=group, text=text, hoverinfo="text", legendgroup=group,
                                     showlegend=not scene and k == 0),
                          row=k // cols + 1, col=k % cols + 1)
            fig.update_xaxes(title_text=x, row=k // cols + 1, col=k % cols + 1)
            fig.update_yaxes(title_text=y, row=k // cols + 1, col=k % cols + 1)
    if scene:
        fig.update_scenes(xaxis_title=names[0], yaxis_title=names[1], zaxis_title=names[2])
    fig.update_layout(title=f"frontier: {len(summary['trials'])} front trials of {len(ok)} ok · "
                            f"hypervolume {summary['hypervolume']:.6g}", height=450 * rows)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)


def _hover(row: pd.Series) -> str:
    lines = [f"<b>{row['pipeline']}</b> ({row['trial_id']})"]
    lines += [f"{c}: {row[c]:.4g}" for c in ("accuracy", "top5", "size_bytes", "latency_ms", "sparsity")]
    lines += [f"{c[6:]}: {row[c]}" for c in row.index if c.startswith("param.") and pd.notna(row[c])]
    return "<br>".join(lines)
