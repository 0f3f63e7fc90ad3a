"""``frontier front``: the front of a run (finished or still running) as a terminal table, JSON, or an HTML report."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from trainables.errors import FrontierError
from trainables.layout import RunFolder

from .baselines import DOMINATED_BY, dominated_by, read_or_warn
from .files import read_trials
from .format import (byte_size, hypervolume_text, interval_text, is_reference, precision_label, present, repeats,
                     significant, target_text, with_spread)
from .summary import front_summary


@dataclass(frozen=True)
class TableColumn:
    """A column of the front table: its header, the ``trials.csv`` column it shows, how a value reads,
    and whether a mean over several seeds shows its standard deviation beside (``spread``)."""

    header: str
    source: str
    format: Callable[[Any], str] = str
    spread: bool = False


# nominal sparsity beside real bytes, real latency and what timed it; a column an older trials.csv
# lacks shows "-"; exact values are in trials.csv and `frontier front --json`
TABLE_COLUMNS: tuple[TableColumn, ...] = (
    TableColumn("trial", "trial_id"),
    TableColumn("pipeline", "pipeline"),
    TableColumn("accuracy", "accuracy", "{:.4f}".format, spread=True),
    TableColumn("95% interval", "accuracy_interval"),
    TableColumn("top5", "top5", "{:.4f}".format, spread=True),
    TableColumn("size", "size_bytes", byte_size, spread=True),
    TableColumn("latency_ms", "latency_ms", significant, spread=True),
    TableColumn("target", "latency_target"),  # a latency target and whether it was met; only when a row has one
    TableColumn("iqr_ms", "latency_iqr_ms", significant),
    TableColumn("p90_ms", "latency_p90_ms", significant),
    TableColumn("img/s", "throughput_ips", "{:,.0f}".format),
    TableColumn("backend", "backend"),
    TableColumn("sparsity", "sparsity", "{:.2f}".format),
    TableColumn("precision", "precision_label"),
    TableColumn("real_sparsity", "real_sparsity", "{:.2f}".format),
)
LEFT = ("trial_id", "pipeline", "backend", "precision_label")
# the accuracy's 95% interval (Wilson, over accuracy_n test images): "-" for a run from before it


def load_front(run_dir: str | Path, *, all_trials: bool = False) -> tuple[pd.DataFrame, dict]:
    """The run's trials and its front, recomputed from ``trials.csv`` under ``front.json``'s objectives;
    ``all_trials``: infeasible trials (the spec's ``select``) too."""
    frame = read_trials(run_dir)
    try:
        stored = json.loads(RunFolder(Path(run_dir)).front_json.read_text())
    except (OSError, ValueError):
        raise FrontierError(f"run_dir: '{run_dir}' has no readable front.json") from None
    names = [o["name"] for o in stored["objectives"]]
    directions = [o["direction"] for o in stored["objectives"]]
    return frame, front_summary(frame, names, directions, stored["reference"], all_trials=all_trials,
                                running=int(stored.get("running", 0)))


def show_front(run_dir: str | Path, *, html: str | None = None, as_json: bool = False,
               all_trials: bool = False) -> None:
    """Print the front (table or JSON) and optionally write the HTML page; ``all_trials``: the front
    of every ok trial, infeasible ones included."""
    frame, summary = load_front(run_dir, all_trials=all_trials)
    baselines = read_or_warn(run_dir, lambda line: print(f"frontier: warning: {line}", file=sys.stderr))
    points = None if baselines is None else dominated_by(baselines[0], frame, summary)
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        print_front_table(frame, summary, Console())
        if points is not None:
            _print_whole(baselines_table(points, summary), Console())
    if html:
        write_html(frame, summary, html, run_dir, baselines=points)
        if not as_json:
            print(f"wrote {html}")


def print_front_table(frame: pd.DataFrame, summary: dict, console: Console) -> None:
    """Print the front table to ``console``: on a terminal it fits the terminal's width (columns
    drop before anything is cut); to a pipe or a log it is printed whole, however wide."""
    if console.is_terminal:
        console.print(front_table(frame, summary, width=console.width))
        return
    _print_whole(front_table(frame, summary), console)


def _print_whole(table: Table, console: Console) -> None:
    """Print ``table`` on a terminal as it fits; to a pipe or a log whole, however wide."""
    if not console.is_terminal:
        console.width = console.measure(table, options=console.options.update_width(10**6)).maximum
    console.print(table)


def baselines_table(points: pd.DataFrame, summary: dict) -> Table:
    """The run's baselines (``baselines.json``, :mod:`search.results.baselines`) in file order: label,
    objectives, how many front trials dominate each (``points`` as :func:`~search.results.baselines.dominated_by`
    returns them), and how it was made."""
    front = len(summary["trials"])
    table = Table(title=f"baselines (bench/baselines.py): each dominated by k of the {front} front trials "
                        "(noise-aware, as the front)")
    for header in ("baseline", "accuracy", "size", "latency_ms", "dominated by", "how"):
        table.add_column(header, justify="left" if header in ("baseline", "how") else "right",
                         no_wrap=header == "baseline", overflow="fold")
    for _, point in points.iterrows():
        table.add_row(point["label"], f"{point['accuracy']:.4f}", byte_size(point["size_bytes"]),
                      significant(point["latency_ms"]), f"{point[DOMINATED_BY]} of {front}", point["how"])
    return table


def front_table(frame: pd.DataFrame, summary: dict, width: int | None = None) -> Table:
    """The front's trials, best accuracy first, with nominal sparsity beside real bytes and latency,
    and the backend that measured the latency; a caption says where (device, batch). The reference
    trial (the dense model as it is) is marked ``(reference)`` and shown last when it is off the front.
    A trial pruned to a latency target shows it beside its latency (``target``: ``3.10 ms ✓`` when met,
    :func:`~search.results.format.target_text`); the column is there only when some row has a target.

    Trial ids and pipelines are never shortened (``rerun --trial`` takes the id). Columns that do
    not fit in ``width`` characters are left out, the run's objectives last; should the id and
    pipeline alone not fit, the pipeline folds onto more lines. No cell is ever cut to "…".
    """
    ids = [t["trial_id"] for t in summary["trials"]]
    rows = frame[frame["trial_id"].isin(ids)].sort_values(["accuracy", "size_bytes"], ascending=[False, True])
    references = frame[[is_reference(r) and r["status"] == "ok" and r["trial_id"] not in ids for _, r in frame.iterrows()]]
    rows = pd.concat([rows, references])  # the dense model as it is, last, when it is not on the front itself
    rows = rows.assign(pipeline=[f"{r['pipeline']} (reference)" if is_reference(r) else r["pipeline"]
                                 for _, r in rows.iterrows()],
                       backend=[backend_label(row) for _, row in rows.iterrows()],
                       precision_label=[precision_label(row) for _, row in rows.iterrows()],
                       accuracy_interval=[interval_text(row) for _, row in rows.iterrows()],
                       latency_target=[target_text(row) for _, row in rows.iterrows()])
    columns = [c for c in TABLE_COLUMNS if c.source != "latency_target" or any(rows["latency_target"])]
    cells = {c.source: [_cell(row, c) for _, row in rows.iterrows()] for c in columns}
    widths = {c.source: max([len(c.header), *map(len, cells[c.source])]) for c in columns}
    shown = _fitting(widths, [o["name"] for o in summary["objectives"]], width, columns)
    ok = int((frame["status"] == "ok").sum())
    running = f" · {summary['running']} still running" if summary.get("running") else ""
    table = Table(title=f"front: {len(ids)} of {ok} ok trials ({len(frame)} finished{running}) · "
                        f"{hypervolume_text(summary)}",
                  caption="\n".join(c for c in (accuracy_caption(rows), latency_caption(rows)) if c) or None)
    for c in shown:
        # the id never wraps (one piece to copy); every cell folds rather than losing characters to "…"
        table.add_column(c.header, justify="left" if c.source in LEFT else "right", overflow="fold",
                         no_wrap=c.source != "pipeline", min_width=widths[c.source] if c.source == "trial_id" else None)
    for i in range(len(rows)):
        table.add_row(*(cells[c.source][i] for c in shown))
    return table


def _fitting(widths: dict[str, int], objectives: list[str], width: int | None,
             columns: list[TableColumn] | None = None) -> list[TableColumn]:
    """The ``columns`` (default: all) that fit in ``width`` characters, in table order: the id and
    pipeline always, then the objectives, then a latency target (what the trial was pruned to), then
    the others from the left; all of them when ``width`` is None."""
    columns = list(TABLE_COLUMNS) if columns is None else columns
    if width is None:
        return columns
    order = ["trial_id", "pipeline", *objectives, "latency_target"] + [c.source for c in columns]
    kept: set[str] = set()
    used = 1  # the left border; each column adds a space either side and its right border
    for source in dict.fromkeys(order):
        if source in widths and (len(kept) < 2 or used + widths[source] + 3 <= width):
            kept.add(source)
            used += widths[source] + 3
    return [c for c in columns if c.source in kept]


def backend_label(row: pd.Series) -> str:
    """``latency_backend`` and ``latency_precision`` of a trials.csv row (``tensorrt fp16``), with
    ``sparse`` when TensorRT's 2:4 kernels were allowed; ``-`` for a run that predates them."""
    if not present(row, "latency_backend"):
        return "-"
    parts = [str(row["latency_backend"])]
    if present(row, "latency_precision"):
        parts.append(str(row["latency_precision"]))
    if present(row, "latency_sparse_weights") and int(row["latency_sparse_weights"]):
        parts.append("sparse")
    return " ".join(parts)


def accuracy_caption(rows: pd.DataFrame) -> str | None:
    """How to read the accuracies: their interval and the rule the front applies; None for a run
    from before accuracy carried its error."""
    if not len(rows) or "accuracy_se" not in rows or rows["accuracy_se"].isna().all():
        return None
    seeds = max((repeats(row) for _, row in rows.iterrows()), default=1)
    if seeds > 1:
        return (f"each value the mean over {seeds} seeds ± their standard deviation; accuracy on the test split, "
                "95% interval beside (mean ± 1.96 standard errors: the test split's binomial error and the "
                "seeds' spread); accuracies within 1.96 standard errors of their difference are equal to the front")
    return ("accuracy on the test split, 95% interval (Wilson) beside; accuracies within 1.96 standard "
            "errors of their difference are equal to the front")


def latency_caption(rows: pd.DataFrame) -> str | None:
    """Where the rows' latency was measured: ``latency on cpu at batch 1 (median; ...)``; None without a record."""
    if not len(rows) or "latency_device" not in rows:
        return None
    devices = ", ".join(sorted({str(d) for d in rows["latency_device"].dropna()})) or "-"
    batches = ", ".join(sorted({str(int(b)) for b in rows.get("latency_batch", pd.Series(dtype=float)).dropna()}))
    return (f"latency on {devices} at batch {batches or '-'} (median; iqr: its noise; latencies within their "
            f"combined spread, each its iqr but at least 2%, are equal to the front; p90 beside; img/s at the throughput batch)")


def _cell(row: pd.Series, column: TableColumn) -> str:
    if column.spread:
        return with_spread(row, column.source, column.format)
    return column.format(row[column.source]) if present(row, column.source) else "-"


def write_html(frame: pd.DataFrame, summary: dict, path: str | Path, run_dir: str | Path | None = None, *,
               baselines: pd.DataFrame | None = None) -> None:
    """The run's self-contained report (opens offline; plotly inlined): the front in 3-D and every
    2-D projection, the normalised hypervolume after each finished trial, the trials over wall time
    per worker, parameter importances per objective, and a sortable table of every trial.

    See :mod:`search.results.report_page` for what the page holds; ``run_dir`` (the run folder) gives the
    ``frontier rerun`` commands, the spec's ``select`` and the Optuna study for importances;
    ``baselines`` (points with their ``dominated_by``, :func:`search.results.baselines.dominated_by`)
    are overlaid on the front and listed below it; None: the page has no baselines.
    """
    from .report_page import render_page

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(render_page(frame, summary, run_dir, baselines), encoding="utf-8")
