"""The HTML report of a run (``frontier front RUN --html FILE``): one self-contained page.

From the top: a summary line (trials finished, still running, front size, the hypervolume as a
share of the reference box, and the noise rule); the front in 3-D and every 2-D projection (colour:
order PB/PA/PBA/none; symbol: pruning method, filled fp32/fp16, open int8; large opaque points are
the front, small faded ones dominated; bytes on a log axis; the spec's ``select`` drawn as dashed
lines where they cut; accuracy with error bars, its 95% Wilson interval over the test images; hover:
the pipeline, objectives, the accuracy's interval, latency with its spread (and the latency target
of a trial pruned to one, met or missed), and the exact
``frontier rerun`` command; a trial of ``repeats: k`` shows each value as the mean over its seeds ±
their standard deviation, and its accuracy's error bar is the mean ± 1.96 standard errors); with
``RUN/baselines.json``, the baselines (:mod:`search.results.baselines`) as a black-cross
``baseline`` series on every projection and a short table below the front, each with how many
front trials dominate it; the normalised hypervolume after each finished trial; a timeline of the trials over wall time, one row
per worker; parameter importances per objective (Optuna's default evaluator on the run's
``study.journal``); and a sortable table of every trial (its ``latency target`` column: a trial's
target beside its measured latency, ``3.10 ms ✓`` met or ``✗`` missed, empty without one).

The page records any JavaScript error into ``<pre id="js-errors">`` (the browser test reads it).
Plotly and Optuna are imported here only, lazily from :func:`search.results.report.write_html`.
"""

from __future__ import annotations

import html
import itertools
import math
import re
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from search.spec.constraints import SELECT_FIELDS
from trainables.layout import RunFolder

from .format import (accuracy_interval, byte_size, hypervolume_text, interval_text, is_reference, precision_label, present,
                     repeats, significant, target_text, with_spread)
from .front import normalized_hypervolume
from .summary import LATENCY_TARGET_TOLERANCE, TARGET_METRIC, infeasible, latency_target, noisy_front

ORDER_COLOURS = {"PB": "#1f77b4", "PA": "#ff7f0e", "PBA": "#2ca02c", "none": "#7f7f7f"}
FRONT_COLUMNS = 2  # subplots a row in the front's figure
METHOD_SYMBOLS = {"gradual": "circle", "epruning": "diamond", "none": "square"}
ERROR_HOOK = """<pre id="js-errors" style="color:#b00"></pre>
<script>window.__errors = [];
function __record(m) { window.__errors.push(m); var e = document.getElementById('js-errors');
  if (e) { e.textContent = window.__errors.join('\\n'); e.setAttribute('data-count', window.__errors.length); } }
window.onerror = function (msg, src, line) { __record(msg + ' (' + src + ':' + line + ')'); };
window.addEventListener('unhandledrejection', function (ev) { __record('unhandled rejection: ' + ev.reason); });
</script>"""
SORT_SCRIPT = """<script>
document.querySelectorAll('table.trials th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0], rows = Array.from(body.rows);
    var asc = th.getAttribute('data-asc') !== '1'; th.setAttribute('data-asc', asc ? '1' : '0');
    rows.sort(function (a, b) {
      var x = a.cells[col].getAttribute('data-v'), y = b.cells[col].getAttribute('data-v');
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
      return asc ? c : -c; });
    rows.forEach(function (r) { body.appendChild(r); }); }); });
</script>"""


PRUNE_LABEL = r"(\d+|L\d+|L[0-9.e+-]+ms)"  # a gradual stage's label: a sparsity (50), a latency target (L40, L2.5ms)


def pruning_method(pipeline: str) -> str:
    """``epruning`` (an ``E<s>`` stage, ``EL40`` to a latency target), ``gradual`` (a bare sparsity stage
    such as ``50``, or ``L40`` / ``L2ms`` to a latency target) or ``none``.

    Example:
        >>> [pruning_method(p) for p in ("D|T|E50|B", "D|T|EL40|B", "D|L2.5ms|T|B", "D|50|T|B", "D|T|B")]
        ['epruning', 'epruning', 'gradual', 'gradual', 'none']
    """
    parts = str(pipeline).split("|")
    if any(re.fullmatch(rf"E{PRUNE_LABEL}", p) for p in parts):
        return "epruning"
    return "gradual" if any(re.fullmatch(PRUNE_LABEL, p) for p in parts) else "none"


def render_page(frame: pd.DataFrame, summary: dict, run_dir: str | Path | None,
                baselines: pd.DataFrame | None = None) -> str:
    """The whole page as one HTML string (plotly.js inlined once); ``baselines``: points with their
    ``dominated_by`` (:func:`search.results.baselines.dominated_by`), drawn on the front and listed
    below it; None: no baselines."""
    import plotly.io as pio

    names = [o["name"] for o in summary["objectives"]]
    front_ids = {t["trial_id"] for t in summary["trials"]}
    frame = frame.copy()
    frame["on_front"] = frame["trial_id"].isin(front_ids)
    ok = frame[frame["status"] == "ok"]
    front = _front_figure(ok, names, run_dir)
    if baselines is not None and len(baselines):
        _add_baselines(front, baselines, names, len(front_ids))
    figures = [("front", front),
               ("hypervolume", _hypervolume_figure(frame, summary)),
               ("timeline", _timeline_figure(frame))]
    importance = _importance_figure(run_dir, names)
    figures.append(importance if isinstance(importance[1], str) else ("importances", importance[1]))
    parts, first = [], True
    for key, fig in figures:
        if isinstance(fig, str):
            parts.append(f'<section id="{key}"><h2>{key}</h2><p class="note">{html.escape(fig)}</p></section>')
            continue
        div = pio.to_html(fig, include_plotlyjs=first, full_html=False, div_id=f"plot-{key}",
                          config={"displaylogo": False})
        first = False
        parts.append(f'<section id="{key}">{div}</section>')
        if key == "front" and baselines is not None:
            parts.append(_baselines_html(baselines, len(front_ids)))
    title = f"frontier report: {html.escape(Path(run_dir).name) if run_dir else 'run'}"
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title>{_STYLE}</head><body>'
            f"{ERROR_HOOK}<h1>{title}</h1>{_summary_html(frame, summary)}"
            + "".join(parts) + _table_html(frame, names, run_dir) + SORT_SCRIPT + "</body></html>")


_STYLE = """<style>body{font-family:sans-serif;margin:1em 2em;color:#222} h1{font-size:1.4em}
.summary{font-size:1.1em;background:#f4f6fa;padding:.6em 1em;border-radius:6px}
.note{color:#555} table.trials{border-collapse:collapse;font-size:12px}
table.trials th{cursor:pointer;background:#eef;position:sticky;top:0}
table.trials td,table.trials th{border:1px solid #ccc;padding:2px 6px;white-space:nowrap}
tr.front td{background:#fff6e0} tr.reference td{font-weight:bold} tr.failed td,tr.stopped td{color:#999}</style>"""


def _summary_html(frame: pd.DataFrame, summary: dict) -> str:
    ok = int((frame["status"] == "ok").sum())
    running = summary.get("running", 0)
    live = (f" · <b>search running: {running} trial(s) not finished yet</b>" if running else "")
    counts = frame["status"].value_counts().to_dict()
    return (f'<p class="summary" id="summary">{len(frame)} trials finished ({ok} ok, {counts.get("failed", 0)} failed, '
            f'{counts.get("stopped", 0)} stopped){live} · front: {len(summary["trials"])} trials · '
            f'{html.escape(hypervolume_text(summary))}: the share of the box between the reference point and the '
            f'best value seen of each objective that the front dominates (0 to 1).<br>'
            f'Noise rule: two latencies within their combined spread (each the interquartile range over its timed '
            f'runs, at least 2% of its median) count as equal, and so do two accuracies within 1.96 standard errors '
            f'of their difference (each accuracy\'s binomial standard error on the test split; its error bar is '
            f'the 95% Wilson interval), so no trial is on the front only because of noise.{_seeds_note(frame)}</p>')


def _seeds_note(frame: pd.DataFrame) -> str:
    """The summary's sentence on repeated trials (spec ``repeats``); empty for a run of one seed a trial."""
    seeds = max((repeats(row) for _, row in frame.iterrows()), default=1)
    if seeds <= 1:
        return ""
    return (f'<br><span id="seeds">Each trial ran its plan with {seeds} seeds: its values are their means, shown '
            f'± their standard deviation; its accuracy\'s standard error is that of the mean, '
            f'sqrt(p(1-p)/n + sd²/{seeds}) (the test split\'s error, which all seeds share, and the seeds\' spread), '
            f'and its error bar the mean ± 1.96 standard errors.</span>')


def _rerun(run_dir: str | Path | None, trial_id: str) -> str:
    return f"frontier rerun {run_dir if run_dir is not None else 'RUN_DIR'} --trial {trial_id}"


def _hover(row: pd.Series, run_dir: str | Path | None) -> str:
    """A point's hover: pipeline, id, objectives, latency with its spread, sparsity, the rerun command."""
    lines = [f"<b>{row['pipeline']}</b> ({row['trial_id']}){' · on the front' if row['on_front'] else ''}"]
    seeds = repeats(row)
    if seeds > 1:
        lines.append(f"mean of {seeds} seeds ± their standard deviation")
    for c in ("accuracy", "top5"):
        if present(row, c):
            lines.append(f"{c}: {with_spread(row, c, '{:.4g}'.format)}")
            if c == "accuracy" and accuracy_interval(row) is not None:
                images = f", {int(row['accuracy_n'])} test images" if present(row, "accuracy_n") else ""
                lines[-1] += f" (95%: {interval_text(row)}{images})"
    if present(row, "size_bytes"):
        lines.append(f"size: {with_spread(row, 'size_bytes', byte_size)} ({row['size_bytes']:,.0f} B)")
    if present(row, "latency_ms"):
        iqr = f" (iqr {row['latency_iqr_ms']:.3g})" if present(row, "latency_iqr_ms") else ""
        if seeds <= 1 and iqr:
            iqr = f" ± {row['latency_iqr_ms'] / 2:.3g}{iqr}"
        lines.append(f"latency: {with_spread(row, 'latency_ms', '{:.4g}'.format)} ms{iqr}")
    target = latency_target(row)
    if target:
        verdict = {True: "met", False: "missed", None: "not measured"}[target["latency_met"]]
        lines.append(f"latency target: {target[TARGET_METRIC]:.4g} ms, {verdict} "
                     f"(within {LATENCY_TARGET_TOLERANCE - 1:.0%} above it)")
    real = f", real {row['real_sparsity']:.3g}" if present(row, "real_sparsity") else ""
    if present(row, "sparsity"):
        lines.append(f"sparsity: nominal {row['sparsity']:.3g}{real}; precision {precision_label(row)}")
    lines.append(f"<i>{_rerun(run_dir, row['trial_id'])}</i>")
    return "<br>".join(lines)


def _accuracy_bars(part: pd.DataFrame) -> dict | None:
    """Plotly's asymmetric error bars of ``part``'s accuracies: each its 95% Wilson interval; None when
    no row has one (a run from before ``accuracy_n``), a bar of 0 for a row without."""
    bounds = [accuracy_interval(r) for _, r in part.iterrows()]
    if all(b is None for b in bounds):
        return None
    up = [0.0 if b is None else b[1] - a for b, a in zip(bounds, part["accuracy"])]
    down = [0.0 if b is None else a - b[0] for b, a in zip(bounds, part["accuracy"])]
    return {"type": "data", "symmetric": False, "array": up, "arrayminus": down, "thickness": 1, "width": 3}


def _select_bounds(run_dir: str | Path | None) -> dict[str, float]:
    """``{objective: bound}`` from the run's ``spec.yaml``'s ``select``; empty when there is none."""
    if run_dir is None:
        return {}
    import yaml

    try:
        spec = yaml.safe_load((Path(run_dir) / "spec.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    select = spec.get("select") or {}
    return {objective: float(select[field]) for field, (objective, _) in SELECT_FIELDS.items()
            if select.get(field) is not None}


def _front_figure(ok: pd.DataFrame, names: list[str], run_dir: str | Path | None):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    pairs = list(itertools.combinations(names, 2))
    scene = len(names) == 3
    cells = ([{"type": "scene"}] if scene else []) + [{"type": "xy"}] * len(pairs)
    cols = FRONT_COLUMNS
    rows = -(-len(cells) // cols)
    grid = [cells[i * cols:(i + 1) * cols] + [None] * (cols - len(cells[i * cols:(i + 1) * cols])) for i in range(rows)]
    titles = (["front in 3-D"] if scene else []) + [f"{y} vs {x}" for x, y in pairs]
    fig = make_subplots(rows=rows, cols=cols, specs=grid, subplot_titles=titles)
    ok = ok.assign(method=ok["pipeline"].map(pruning_method),
                   precision_label=[precision_label(r) for _, r in ok.iterrows()])
    hover = [_hover(r, run_dir) for _, r in ok.iterrows()]
    ok = ok.assign(hover=hover)
    symbols = [METHOD_SYMBOLS[m] + ("-open" if p.startswith("int8") else "") for m, p in zip(ok["method"], ok["precision_label"])]
    ok = ok.assign(symbol=symbols)
    for order, colour in ORDER_COLOURS.items():
        for on_front in (True, False):
            part = ok[(ok["order"].fillna("none") == order) & (ok["on_front"] == on_front)]
            if not len(part):
                continue
            group = f"{order} · {'front' if on_front else 'dominated'}"
            bars = _accuracy_bars(part)
            marker = {"color": colour, "symbol": list(part["symbol"]), "opacity": 1.0 if on_front else 0.35,
                      "size": 12 if on_front else 8, "line": {"width": 1.5 if on_front else 0, "color": "black"}}
            if scene:
                errors = {f"error_{axis}": bars for axis, name in zip("xyz", names) if name == "accuracy" and bars}
                fig.add_trace(go.Scatter3d(x=part[names[0]], y=part[names[1]], z=part[names[2]], mode="markers",
                                           marker={**marker, "size": 6 if on_front else 4}, name=group,
                                           text=part["hover"], hoverinfo="text", legendgroup=group, **errors),
                              row=1, col=1)
            for k, (x, y) in enumerate(pairs, start=1 if scene else 0):
                errors = {f"error_{axis}": bars for axis, name in (("x", x), ("y", y)) if name == "accuracy" and bars}
                fig.add_trace(go.Scatter(x=part[x], y=part[y], mode="markers", marker=marker, name=group,
                                         text=part["hover"], hoverinfo="text", legendgroup=group,
                                         showlegend=not scene and k == 0, **errors), row=k // cols + 1, col=k % cols + 1)
    bounds = _select_bounds(run_dir)
    references = ok[[is_reference(r) for _, r in ok.iterrows()]]
    for k, (x, y) in enumerate(pairs, start=1 if scene else 0):
        r, c = k // cols + 1, k % cols + 1
        _mark_references(fig, references, x, y, r, c)
        fig.update_xaxes(title_text=x, type="log" if x == "size_bytes" else None, row=r, col=c)
        fig.update_yaxes(title_text=y, type="log" if y == "size_bytes" else None, row=r, col=c)
        sub = fig.get_subplot(r, c)
        xref, yref = sub.xaxis.plotly_name.replace("axis", ""), sub.yaxis.plotly_name.replace("axis", "")
        for axis, name in (("x", x), ("y", y)):
            if name in bounds:  # a dashed line across the subplot where the select cuts
                value, label = bounds[name], f"select: {name} {'≥' if name == 'accuracy' else '≤'} {bounds[name]:g}"
                line = ({"xref": xref, "yref": f"{yref} domain", "x0": value, "x1": value, "y0": 0, "y1": 1}
                        if axis == "x" else {"xref": f"{xref} domain", "yref": yref, "x0": 0, "x1": 1, "y0": value, "y1": value})
                fig.add_shape(type="line", line={"dash": "dash", "color": "crimson"}, **line)
                fig.add_annotation(text=label, showarrow=False, font={"color": "crimson", "size": 10},
                                   **({"xref": xref, "yref": f"{yref} domain", "x": value, "y": 1.02} if axis == "x"
                                      else {"xref": f"{xref} domain", "yref": yref, "x": 0.98, "y": value,
                                            "xanchor": "right", "yanchor": "bottom"}))
    if scene:
        fig.update_scenes(xaxis_title=names[0], yaxis_title=names[1], zaxis_title=names[2],
                          **{f"{a}axis_type": "log" for a, n in zip("xyz", names) if n == "size_bytes"})
    fig.update_layout(title="the front (colour: order; symbol: pruning method, open = int8; large outlined: on the "
                            "front; faded: dominated; dashed: select)", height=430 * rows,
                      margin={"t": 80}, legend={"title": "order · front"})
    return fig


def _mark_references(fig, references: pd.DataFrame, x: str, y: str, row: int, col: int) -> None:
    """An arrow labelled ``reference`` at each reference trial's point in subplot (row, col): the
    dense model as it is, what every other trial is compared with (an annotation, not a point)."""
    sub = fig.get_subplot(row, col)
    xref, yref = sub.xaxis.plotly_name.replace("axis", ""), sub.yaxis.plotly_name.replace("axis", "")
    for _, point in references.iterrows():
        # plotly places annotations on a log axis in log10 units
        at = [math.log10(point[n]) if n == "size_bytes" else point[n] for n in (x, y)]
        fig.add_annotation(x=at[0], y=at[1], xref=xref, yref=yref, text="reference (dense)", showarrow=True,
                           arrowhead=2, ax=30, ay=-30, font={"size": 10})


BASELINE = "baseline"  # the trace name of the baselines on every projection of the front
BASELINE_MARKER = {"symbol": "x", "size": 11, "color": "black", "line": {"width": 1, "color": "white"}}


def _baseline_hover(point: pd.Series, front: int) -> str:
    """A baseline's hover: its label, objectives, how many front trials dominate it, how it was made."""
    return "<br>".join([f"<b>baseline {html.escape(str(point['label']))}</b>",
                        f"accuracy: {point['accuracy']:.4g}", f"size: {byte_size(point['size_bytes'])} "
                        f"({point['size_bytes']:,.0f} B)", f"latency: {point['latency_ms']:.4g} ms",
                        f"dominated by {point['dominated_by']} of {front} front trials",
                        f"<i>{html.escape(str(point['how']))}</i>"])


def _add_baselines(fig, points: pd.DataFrame, names: list[str], front: int) -> None:
    """One ``baseline`` marker series on the 3-D front and on each 2-D projection (as :func:`_front_figure`
    lays them out); the hover names each point. Objectives the points lack are not drawn."""
    import plotly.graph_objects as go

    shown = [n for n in names if n in points and points[n].notna().all()]
    hover = [_baseline_hover(r, front) for _, r in points.iterrows()]
    scene = len(names) == 3
    common = dict(mode="markers", marker=BASELINE_MARKER, name=BASELINE, legendgroup=BASELINE, text=hover,
                  hoverinfo="text", customdata=list(points["label"]))
    if scene and len(shown) == 3:
        fig.add_trace(go.Scatter3d(x=points[names[0]], y=points[names[1]], z=points[names[2]], **common,
                                   showlegend=True), row=1, col=1)
    for k, (x, y) in enumerate(itertools.combinations(names, 2), start=1 if scene else 0):
        if x in shown and y in shown:
            fig.add_trace(go.Scatter(x=points[x], y=points[y], **common, showlegend=not scene and k == 0),
                          row=k // FRONT_COLUMNS + 1, col=k % FRONT_COLUMNS + 1)


def _baselines_html(points: pd.DataFrame, front: int) -> str:
    """A short table below the front: each baseline, its objectives and how many front trials dominate it."""
    rows = "".join(
        f'<tr data-baseline="{html.escape(str(r["label"]))}"><td>{html.escape(str(r["label"]))}</td>'
        f'<td>{r["accuracy"]:.4f}</td><td>{byte_size(r["size_bytes"])}</td><td>{significant(r["latency_ms"])}</td>'
        f'<td>{r["dominated_by"]} of {front}</td><td>{html.escape(str(r["how"]))}</td></tr>'
        for _, r in points.iterrows())
    return ('<section id="baselines"><h2>baselines</h2><p class="note">What a user would script by hand from the '
            "reference model (bench/baselines.py: Torch-Pruning's uniform channel pruning, fine-tuning, ONNX "
            "Runtime's static INT8), measured on the same test split and engine; <i>dominated by</i> counts the "
            "front trials at least as good in every objective and better in one, under the front's noise rule. Drawn as black crosses "
            'on the front.</p><table class="trials" id="baselines-table"><thead><tr><th>baseline</th><th>accuracy</th>'
            "<th>size</th><th>latency_ms</th><th>dominated by</th><th>how</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></section>")


def hypervolume_history(frame: pd.DataFrame, summary: dict) -> pd.DataFrame:
    """The normalised hypervolume of the front after each finished trial, in the order trials ended
    (``timestamp``, else trial id), under the summary's reference point and ideal (fixed, so the
    curve only rises); infeasible trials do not count, noise is treated as ``front.json`` treats it (:func:`noisy_front`)."""
    names = [o["name"] for o in summary["objectives"]]
    directions = [o["direction"] for o in summary["objectives"]]
    key = "timestamp" if "timestamp" in frame and frame["timestamp"].notna().all() else "trial_id"
    ordered = frame.sort_values(key).reset_index(drop=True)
    usable = (ordered["status"] == "ok") & ~infeasible(ordered)
    out = []
    for i in range(len(ordered)):
        ok = ordered.iloc[: i + 1][usable.iloc[: i + 1]]
        value = 0.0
        if len(ok) and summary.get("ideal"):
            values = ok[names].astype(float).to_numpy()
            front = values[noisy_front(ok, names, directions)]
            value = normalized_hypervolume(front, directions, summary["reference"], summary["ideal"])
        out.append({"finished": i + 1, "trial_id": ordered["trial_id"][i], "hypervolume_normalized": value})
    return pd.DataFrame(out)


def _hypervolume_figure(frame: pd.DataFrame, summary: dict):
    import plotly.graph_objects as go

    history = hypervolume_history(frame, summary)
    fig = go.Figure(go.Scatter(x=history["finished"], y=history["hypervolume_normalized"], mode="lines+markers",
                               text=history["trial_id"], name="hypervolume",
                               hovertemplate="after %{x} trials (last %{text}): %{y:.3f}<extra></extra>"))
    fig.update_layout(title="hypervolume after each finished trial, normalised: share of the reference box "
                            "(0 = nothing dominates the reference point, 1 = the ideal point reached)",
                      xaxis_title="trials finished", yaxis_title="normalised hypervolume", yaxis_range=[0, 1.05],
                      height=360)
    return fig


def _timeline_figure(frame: pd.DataFrame):
    """One bar per trial from its start (last result minus its seconds) to its end, one row per worker."""
    import plotly.graph_objects as go

    if not {"timestamp", "time_total_s"} <= set(frame.columns) or frame["timestamp"].isna().all():
        return "no timeline: this run's trials.csv predates the timestamp column"
    t = frame[frame["timestamp"].notna() & frame["time_total_s"].notna()].copy()
    t["end"] = t["timestamp"].astype(float)
    t["start"] = t["end"] - t["time_total_s"].astype(float)
    zero = float(t["start"].min())
    worker = [f"{r['node_ip']}:{int(r['pid'])}" if present(r, "node_ip") and present(r, "pid") else "worker"
              for _, r in t.iterrows()]
    t["worker"] = worker
    colours = {"ok": "#2ca02c", "stopped": "#ff7f0e", "failed": "#d62728"}
    fig = go.Figure()
    for status, colour in colours.items():
        part = t[t["status"] == status]
        if not len(part):
            continue
        fig.add_trace(go.Bar(y=part["worker"], x=part["end"] - part["start"], base=part["start"] - zero,
                             orientation="h", marker_color=colour, name=status, text=part["trial_id"],
                             hovertemplate="%{text}: %{base:.1f}s to %{x:.1f}s long<extra></extra>"))
    busy = (t["end"] - t["start"]).sum() / max(1e-9, (t["end"].max() - zero) * t["worker"].nunique())
    fig.update_layout(title=f"trials over wall time, one row per worker (busy {busy:.0%} of the time)",
                      xaxis_title="seconds since the first trial started", barmode="overlay",
                      height=160 + 40 * t["worker"].nunique())
    return fig


def _importance_figure(run_dir: str | Path | None, names: list[str]):
    """Parameter importances per objective (Optuna's default evaluator: PED-ANOVA on Optuna 5) from ``study.journal``;
    a sentence instead where they cannot be computed (no study, too few finished trials)."""
    journal = RunFolder(Path(run_dir or ".")).study_journal
    if run_dir is None or not journal.is_file():
        return ("importances", f"no importances: the run folder has no {journal.name}")
    import optuna
    import plotly.graph_objects as go

    from search.run.study import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(journal)
    studies = optuna.study.get_all_study_names(storage)
    if not studies:
        return ("importances", "no importances: the study holds no study")
    study = optuna.load_study(study_name=studies[0], storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 2:
        return ("importances", f"no importances yet: {len(complete)} finished trial(s) in the study, 2 needed")
    fig = go.Figure()
    for i, name in enumerate(names[: len(complete[0].values or [])]):
        try:
            with warnings.catch_warnings():  # Optuna 5's PED-ANOVA warns on every small study, on stderr
                warnings.simplefilter("ignore", UserWarning)
                imp = optuna.importance.get_param_importances(study, target=lambda t, i=i: t.values[i])
        except (ValueError, RuntimeError) as exc:
            return ("importances", f"no importances: {exc}")
        fig.add_trace(go.Bar(x=list(imp.keys()), y=list(imp.values()), name=name))
    fig.update_layout(title="parameter importances per objective (Optuna's default evaluator on the run's study; "
                            "parameters every finished trial has)", barmode="group", yaxis_title="importance",
                      height=380)
    return ("importances", fig)


def _cell(value: Any, text: str | None = None) -> str:
    sort = "" if value is None or (isinstance(value, float) and math.isnan(value)) else value
    shown = text if text is not None else ("-" if sort == "" else str(value))
    return f'<td data-v="{html.escape(str(sort))}">{html.escape(shown)}</td>'


def _table_html(frame: pd.DataFrame, names: list[str], run_dir: str | Path | None) -> str:
    """Every trial, one row each: id, status, front, order, pipeline, objectives (accuracy with its 95%
    interval), the latency target (empty without one), latency spread, nominal and real sparsity, precision, seconds per stage, cached stages,
    error or stop point."""
    seconds = sorted(c for c in frame.columns if c.startswith("seconds."))
    headers = ["trial", "status", "front", "order", "pipeline", "accuracy", "accuracy 95%", "top5", "size", "latency_ms",
               "latency target", "iqr_ms",
               "sparsity", "real_sparsity", "precision", "seconds", "cached", "error / stopped at", "rerun"]
    body = []
    for _, r in frame.sort_values("trial_id").iterrows():
        def v(c: str) -> Any:
            return r[c] if present(r, c) else None

        stage_seconds = " · ".join(f"{c[8:]} {r[c]:.1f}" for c in seconds if present(r, c))
        total = sum(float(r[c]) for c in seconds if present(r, c))
        note = str(v("error") or "") or (f"stopped at {v('stopped_at')}" if v("stopped_at") is not None else "")
        cells = [_cell(r["trial_id"]), _cell(r["status"]), _cell(int(r["on_front"]), "★" if r["on_front"] else ""),
                 _cell(v("order")), _cell(v("pipeline"), f"{r['pipeline']} (reference)" if is_reference(r) else None),
                 _cell(v("accuracy"), None if v("accuracy") is None else with_spread(r, "accuracy", "{:.4f}".format)),
                 _cell(v("accuracy_se"), interval_text(r)),
                 _cell(v("top5"), None if v("top5") is None else with_spread(r, "top5", "{:.4f}".format)),
                 _cell(v("size_bytes"), None if v("size_bytes") is None else with_spread(r, "size_bytes", byte_size)),
                 _cell(v("latency_ms"), None if v("latency_ms") is None else with_spread(r, "latency_ms", significant)),
                 _cell(latency_target(r).get(TARGET_METRIC), target_text(r)),
                 _cell(v("latency_iqr_ms"), None if v("latency_iqr_ms") is None else significant(r["latency_iqr_ms"])),
                 _cell(v("sparsity"), None if v("sparsity") is None else f"{r['sparsity']:.3f}"),
                 _cell(v("real_sparsity"), None if v("real_sparsity") is None else f"{r['real_sparsity']:.3f}"),
                 _cell(precision_label(r)), _cell(total, stage_seconds or "-"), _cell(v("cached_stages")),
                 _cell(note), _cell(_rerun(run_dir, r["trial_id"]))]
        css = ("front" if r["on_front"] else str(r["status"])) + (" reference" if is_reference(r) else "")
        body.append(f'<tr class="{css}" data-trial="{html.escape(str(r["trial_id"]))}">{"".join(cells)}</tr>')
    head = "".join(f"<th>{h}</th>" for h in headers)
    return (f'<section id="trials"><h2>every trial ({len(frame)}; click a header to sort)</h2>'
            f'<table class="trials" id="trials-table"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
            f"</table></section>")

