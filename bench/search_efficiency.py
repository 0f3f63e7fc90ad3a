"""Does the search pay? Samplers, early stopping and low fidelity against random search, per trial-second.

On the search-efficiency task (``spaces/fashion_mnist_search.yaml``: Fashion-MNIST, ResNet-18 at
32 px, PA to 30-85% of the units, then nothing, weight sharing with retraining, or INT8), for each
of ``--seeds`` seeds (the spec's ``seed``: the sampler's and the training's) it runs ``--trials``
trials of each arm:

- ``early_stop``: TPE with early stopping (:mod:`search.run.early_stop`; ``trials`` counts the trials
  not stopped);
- ``random``, ``tpe``, ``nsga2``, ``gp``: the samplers alone;
- ``fidelity``: TPE with every epoch budget at 0.25, then ``frontier rerun --front`` at the full budget.

**What bounds each mechanism** (printed with the figures). ``stoppable_share``: the share of a
search's trial-seconds in stages early stopping could have cut (:func:`stoppable`), its ceiling on
the task whatever its rule. The fidelity arm's ``first_model_share``: its low-fidelity search plus
the first full-budget rerun (which trains the dense and transferred models at the full budget too),
as a share of random's trial-seconds: before it the arm has no model to count, so it cannot reach
random's hypervolume for less.

**Compute.** A trial's trial-seconds are what it would have cost in a search of its own arm:
the arms of a seed share one stage cache to save the bench's wall time, so a stage another arm
computed first is charged at what it cost then (``compute.<slot>``), and a stage the same arm
computed before at what the hit cost (``seconds.<slot>``); everything else a trial spent (its
benchmark, boundary measurements, checkpoints) is charged as it was (:func:`charged`). Early
stopping runs on a cache of its own, so its cache hits, which it never stops, are its own. The
fidelity arm's plans share nothing with the others; its reruns are charged what they took.

**Hypervolume.** Normalised (:func:`search.results.front.normalized_hypervolume`) in one box for
every arm and seed, with size and latency on a log scale (:func:`scaled`): compressed models are
10-130x smaller than the dense one, so in bytes every one of them sits in the box's corner and
each search's hypervolume read 0.995-0.999 on the first seed, blind to which compressed models it
found. The reference point is the spec's ``min_accuracy`` and 1.1x the largest size and latency
any arm measured, the ideal the best of each objective any arm measured. A plan several arms of
a seed ran is one model (the shared cache), so it counts at one latency in all of them, the median
of its measurements (:func:`consensus_latency`): the timer's noise does not decide between
samplers. A search's hypervolume after each trial counts its ``ok`` trials so far; the fidelity arm's is that of its
front's full-budget reruns, as each finishes (nothing before: low-fidelity scores are not the
model a user gets).

It prints, per seed and arm, the final hypervolume, the trial-seconds, and the trial-seconds each
arm needed to reach random search's final hypervolume (and that as a share of random's); writes
``search_efficiency.png`` and ``.html`` (hypervolume against trial-seconds and against trials) and
``search_efficiency.json`` into ``--out``; and ends with the JSON line.

Goals (issue 28): TPE's hypervolume at the trial budget above random's on every seed; early stopping,
or fidelity 0.25 + rerun (its accuracy's rank correlation after the rerun >= 0.7), reaching
random's final hypervolume in <= 0.6x random's trial-seconds on 2 of 3 seeds.

    python bench/search_efficiency.py [--seeds 3] [--trials 14] [--out bench-out] [--work DIR] [--arms ...] [--smoke]

``--smoke``: sklearn's digits at 16 px, one seed, 2 trials per arm, one epoch per stage, the arms
random, early stopping and fidelity (unless ``--arms`` says); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from _common import ROOT, SMOKE_BUDGETS, SMOKE_IMAGE_SIZE, add_smoke_flag, finish, merged, timed_run

sys.path.insert(0, str(ROOT))
from search.results.files import read_trials  # noqa: E402
from search.results.front import ideal_point, normalized_hypervolume  # noqa: E402
from trainables.layout import RunFolder  # noqa: E402
from trainables.pipeline.boundary import UNCOMPRESSED, measured_at, prefix_hash, rung_name  # noqa: E402
from trainables.pipeline.plan import Plan  # noqa: E402

SPACE = ROOT / "spaces" / "fashion_mnist_search.yaml"
ARMS = ("random", "tpe", "nsga2", "gp", "early_stop", "fidelity")
SMOKE_ARMS = ("random", "early_stop", "fidelity")  # the three code paths; the other samplers differ by a name
SAMPLER = {"early_stop": "tpe", "random": "random", "tpe": "tpe", "nsga2": "nsga2", "gp": "gp", "fidelity": "tpe"}
EARLY_STOP = {"enabled": True, "grace": 4, "eta": 2}
FIDELITY = 0.25
PAYS = 0.6  # the share of random's trial-seconds an arm may spend to reach random's final hypervolume
MIN_RANK_CORRELATION = 0.7
COLORS = {"random": "#636EFA", "tpe": "#EF553B", "nsga2": "#00CC96", "gp": "#AB63FA",  # plotly's palette,
          "early_stop": "#FFA15A", "fidelity": "#19D3F3"}  # as the report draws
NAMES, DIRECTIONS = ["accuracy", "size_bytes", "latency_ms"], ["max", "min", "min"]


def arm_spec(arm: str, seed: int, trials: int, smoke: bool) -> dict[str, Any]:
    """The spec of ``arm`` at ``seed``: the task's, its sampler, early stopping or fidelity."""
    raw = yaml.safe_load(SPACE.read_text())
    raw.update(name=f"{arm}-{seed}", seed=seed, trials=trials, sampler=SAMPLER[arm])
    if arm == "early_stop":
        raw["early_stop"] = {**EARLY_STOP, "grace": 1} if smoke else dict(EARLY_STOP)
    if arm == "fidelity":
        raw["fidelity"] = FIDELITY
    return smoke_spec(raw) if smoke else raw


def smoke_spec(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` on sklearn's digits at 16 px with the small ResNet, one epoch per stage."""
    raw = copy.deepcopy(raw)
    raw["data"] = {side: {"name": "digits", "classes": classes, "image_size": SMOKE_IMAGE_SIZE}
                   for side, classes in (("source", [0, 1, 2, 3, 4]), ("target", [5, 6, 7, 8, 9]))}
    raw["model"] = {"name": "small_resnet"}
    raw["budgets"] = merged(raw["budgets"], SMOKE_BUDGETS)
    raw["budgets"]["share"]["groups"] = {"layer3": "keep"}  # the small ResNet has no layer4
    raw["space"] = {"order": {"choice": {"PA": {"s2": {"choice": [0.5, 0.7]}}}},
                    "quantize": {"choice": {"none": {}, "QR": {"share.groups.layer3": {"choice": [4, 16]}},
                                            "I8": {}}}}
    raw["select"] = {}
    return raw


def charged(frame: pd.DataFrame, plans: dict[str, Any]) -> pd.Series:
    """Each trial's trial-seconds in a search of its own (module doc), by trial id, in start order.

    A stage is known by the hash of the plan up to it (:func:`~trainables.pipeline.boundary.prefix_hash`):
    the first trial of the search to reach it pays ``compute.<slot>``, later ones ``seconds.<slot>``."""
    return _charged(frame, plans)[0]


def stoppable(frame: pd.DataFrame, plans: dict[str, Any]) -> pd.Series:
    """The most early stopping could save of each trial (charged as :func:`charged`), by trial id:
    what its stages after its first telling boundary cost, its benchmark included. A boundary tells
    where :func:`~trainables.pipeline.boundary.measured_at` allows, the next stage is not yet computed
    in the search (:func:`~trainables.pipeline.run.next_stage_cached`: a cache hit saves nothing), and
    a compressing stage is done (on this task every trial shares the dense and transferred models:
    before pruning no trial can be told from another). Their sum over a search, as a share of its
    trial-seconds, is the ceiling of what early stopping can save on the task, whatever its rule."""
    return _charged(frame, plans)[1]


def _charged(frame: pd.DataFrame, plans: dict[str, Any]) -> tuple[pd.Series, pd.Series]:
    seen: set[str] = set()
    out, saved = {}, {}
    for _, row in frame.sort_values("optuna_trial").iterrows():
        total = float(row.get("time_total_s") or 0.0)
        plan = Plan.model_validate(plans[row["trial_id"]])
        costs = []
        for done, slot in enumerate(plan.slots(), start=1):
            took, computed = row.get(f"seconds.{slot}"), row.get(f"compute.{slot}")
            if took is None or pd.isna(took):  # not reached (stopped, failed)
                continue
            key = prefix_hash(plan, done)
            first = key not in seen
            cost = float(computed) if first and not pd.isna(computed) else float(took)
            costs.append((done, cost, first))
            seen.add(key)
            total += cost - float(took)
        judged = [d for d, _, first in costs if first and measured_at(plan, d - 1)  # told apart before stage d
                  and not rung_name(plan, d - 1).endswith(UNCOMPRESSED)]
        out[row["trial_id"]] = total
        saved[row["trial_id"]] = sum(c for d, c, _ in costs if judged and d >= judged[0])
    return pd.Series(out), pd.Series(saved)


def search_curve(frame: pd.DataFrame, seconds: pd.Series, box: dict[str, list[float]]) -> dict[str, list[float]]:
    """Cumulated trial-seconds and hypervolume after each trial of a search, in start order."""
    frame = frame.sort_values("optuna_trial").reset_index(drop=True)
    compute, volumes = [], []
    spent = 0.0
    for k in range(len(frame)):
        spent += float(seconds[frame.loc[k, "trial_id"]])
        ok = frame.iloc[: k + 1]
        ok = ok[ok["status"] == "ok"]
        compute.append(spent)
        volumes.append(volume(ok[NAMES].astype(float).to_numpy(), box))
    return {"seconds": compute, "hypervolume": volumes}


def rerun_curve(search_seconds: float, report: dict[str, Any], box: dict[str, list[float]]) -> dict[str, list[float]]:
    """The fidelity arm's curve: after the low-fidelity search, each front rerun's full-budget point."""
    compute, volumes, points, spent = [search_seconds], [0.0], [], search_seconds
    for row in report["trials"]:
        spent += float(row["seconds"])
        if all(isinstance(row["full"].get(n), (int, float)) for n in NAMES):
            points.append([float(row["full"][n]) for n in NAMES])
        compute.append(spent)
        volumes.append(volume(np.array(points), box))
    return {"seconds": compute, "hypervolume": volumes}


def scaled(points: np.ndarray) -> np.ndarray:
    """``points`` (accuracy, bytes, ms) with bytes and ms as their base-10 logarithms (module doc)."""
    points = np.asarray(points, dtype=float).reshape(-1, len(NAMES))
    return np.column_stack([points[:, 0], np.log10(points[:, 1]), np.log10(points[:, 2])])


def volume(points: np.ndarray, box: dict[str, list[float]]) -> float:
    """Normalised hypervolume of ``points`` (objectives' units) in the bench's common ``box`` (log scale)."""
    if not len(points):
        return 0.0
    return normalized_hypervolume(scaled(points), DIRECTIONS, box["reference"], box["ideal"])


def common_box(points: np.ndarray, min_accuracy: float) -> dict[str, list[float]]:
    """One reference point and ideal for every arm and seed, on :func:`scaled` objectives (module doc)."""
    logs = scaled(points)
    worst = logs.max(axis=0)
    return {"reference": [min_accuracy, float(worst[1] + math.log10(1.1)), float(worst[2] + math.log10(1.1))],
            "ideal": ideal_point(logs, DIRECTIONS)}


def needed(curve: dict[str, list[float]], target: float) -> float | None:
    """Trial-seconds a curve needed to reach hypervolume ``target`` (None: never)."""
    for seconds, hv in zip(curve["seconds"], curve["hypervolume"]):
        if hv >= target - 1e-12:
            return float(seconds)
    return None


def run_seed(seed: int, trials: int, work: Path, smoke: bool, arms: list[str]) -> dict[str, Any]:
    """Every arm at ``seed``: their trials tables, plans, charged seconds and the fidelity rerun.

    Arms not in ``arms`` are read back from an earlier invocation's run folders in ``work``, if any.
    Early stopping and fidelity run on caches of their own (the run's); the samplers alone share
    ``work/seed<k>/cache``."""
    out: dict[str, Any] = {}
    for arm in ARMS:
        run_dir = work / f"seed{seed}" / f"{arm}-{seed}"
        if arm not in arms:
            if (run_dir / "trials.csv").is_file():
                out[arm] = load_arm(run_dir, wall=None)
            continue
        shutil.rmtree(run_dir, ignore_errors=True)  # this arm anew
        raw = arm_spec(arm, seed, trials, smoke)
        shared = work / f"seed{seed}" / "cache" if arm in ("random", "tpe", "nsga2", "gp") else None
        try:
            wall, run_dir = timed_run(raw, cache=True, runs_root=work / f"seed{seed}", cache_dir=shared)
            if arm == "fidelity":
                rerun_quietly(run_dir)
        except Exception as exc:  # noqa: BLE001 - an arm that cannot run is reported, not fatal
            out[arm] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        out[arm] = load_arm(run_dir, wall)
    return out


def rerun_quietly(run_dir: Path) -> None:
    """``frontier rerun --front`` of ``run_dir``, its table to ``rerun_front.log`` there."""
    from rich.console import Console

    from search.final.rerun import rerun_front

    with open(run_dir / "rerun_front.log", "w") as log:
        rerun_front(run_dir, console=Console(file=log))


def load_arm(run_dir: Path, wall: float | None) -> dict[str, Any]:
    """One arm's trials table, charged seconds and (fidelity) front rerun, from its run folder."""
    run = RunFolder(run_dir)
    frame = read_trials(run_dir)
    plans = json.loads(run.plans_json.read_text())
    seconds, saved = _charged(frame, plans)
    arm = {"frame": frame, "seconds": seconds, "stoppable": saved, "wall": wall, "run_dir": run_dir, "plans": plans}
    if run.front_rerun_json.is_file():
        arm["rerun"] = json.loads(run.front_rerun_json.read_text())
    return arm


def plan_key(plan: dict[str, Any]) -> str:
    """What makes two trials the same model: the hash of the whole plan (seed included)."""
    whole = Plan.model_validate(plan)
    return prefix_hash(whole, len(whole.slots()))


def consensus_latency(arms: dict[str, Any]) -> None:
    """Every ok trial's ``latency_ms`` set to the median of the seed's measurements of its plan.

    The sampler arms of a seed share a stage cache, so a plan two arms both ran is one model, timed
    once by each: the measurements differ by noise alone (up to 1.7x on this 2-core machine for the
    same network). The hypervolume compares which models a sampler found, so each model counts at
    one latency, the median of every time it was measured, and the samplers' luck with the timer
    does not decide the comparison (what the sampler learned from is left as it was measured). The
    fidelity arm's low-budget models are other models, and its reruns are measured once each."""
    measured: dict[str, list[float]] = {}
    keyed = {}
    for arm, r in arms.items():
        if "frame" not in r or arm == "fidelity":
            continue
        ok = r["frame"]["status"] == "ok"
        keys = r["frame"]["trial_id"].map(lambda t, p=r["plans"]: plan_key(p[t]))
        keyed[arm] = keys
        for key, ms in zip(keys[ok], r["frame"].loc[ok, "latency_ms"].astype(float)):
            measured.setdefault(key, []).append(ms)
    for arm, keys in keyed.items():
        frame = arms[arm]["frame"]
        ok = frame["status"] == "ok"
        frame.loc[ok, "latency_ms"] = [float(np.median(measured[k])) for k in keys[ok]]


def summarize(runs: dict[int, dict[str, Any]], min_accuracy: float) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Curves in the common box, the per-seed figures and the table rows (latencies: :func:`consensus_latency`)."""
    for arms in runs.values():
        consensus_latency(arms)
    points = [r["frame"].loc[r["frame"]["status"] == "ok", NAMES].astype(float).to_numpy()
              for seed in runs.values() for arm, r in seed.items() if "frame" in r and arm != "fidelity"]
    points += [np.array([[t["full"][n] for n in NAMES]]) for seed in runs.values()
               for t in seed.get("fidelity", {}).get("rerun", {}).get("trials", [])
               if all(isinstance(t["full"].get(n), (int, float)) for n in NAMES)]
    box = common_box(np.vstack(points), min_accuracy)
    seeds, table = [], []
    for seed, arms in runs.items():
        curves, figures = {}, {}
        for arm, r in arms.items():
            if "error" in r:
                figures[arm] = {"error": r["error"]}
                continue
            curve = search_curve(r["frame"], r["seconds"], box)
            if arm == "fidelity":
                curve = rerun_curve(curve["seconds"][-1], r["rerun"], box)
            curves[arm] = curve
            figures[arm] = arm_figures(arm, r, curve)
        target = curves["random"]["hypervolume"][-1] if "random" in curves else math.nan
        base = curves["random"]["seconds"][-1] if "random" in curves else math.nan
        for arm, curve in curves.items():
            reach = needed(curve, target)
            figures[arm]["seconds_to_random_final"] = None if reach is None else round(reach, 1)
            figures[arm]["share_of_random_seconds"] = None if reach is None else round(reach / base, 3)
            if arm == "fidelity" and len(curve["seconds"]) > 1:  # no share below this reaches any hypervolume
                figures[arm]["first_model_share"] = round(curve["seconds"][1] / base, 3)
        seeds.append({"seed": seed, "random_final_hypervolume": target, "arms": figures, "curves": curves})
        table += seed_rows(seed, figures)
    return {"box": box, "seeds": seeds}, table


def arm_figures(arm: str, r: dict[str, Any], curve: dict[str, list[float]]) -> dict[str, Any]:
    """One arm's figures at one seed."""
    frame = r["frame"]
    figures = {"trials": int(len(frame)), "ok": int((frame["status"] == "ok").sum()),
               "stopped": int((frame["status"] == "stopped").sum()),
               "final_hypervolume": round(curve["hypervolume"][-1], 4), "trial_seconds": round(curve["seconds"][-1], 1),
               "bench_wall_seconds": None if r["wall"] is None else round(r["wall"], 1)}
    if "boundary_seconds" in frame:
        figures["boundary_seconds"] = round(float(frame["boundary_seconds"].fillna(0).sum()), 1)
    if "stoppable" in r and arm != "fidelity":
        figures["stoppable_share"] = round(float(r["stoppable"].sum()) / max(float(r["seconds"].sum()), 1e-9), 3)
    if arm == "fidelity":
        figures["search_seconds"] = round(curve["seconds"][0], 1)
        figures["rerun_seconds"] = round(curve["seconds"][-1] - curve["seconds"][0], 1)
        rho = r["rerun"]["rank_correlation"]["accuracy"]["spearman"]
        figures["rank_correlation_accuracy"] = None if rho is None else round(rho, 3)
        figures["front_reruns"] = len(r["rerun"]["trials"])
    return figures


def seed_rows(seed: int, figures: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for arm, f in figures.items():
        if "error" in f:
            rows.append((f"seed {seed} {arm}", f"did not run: {f['error']}"))
            continue
        share = f.get("share_of_random_seconds")
        extra = "" if arm != "fidelity" else (f", rank corr {f['rank_correlation_accuracy']}, its first "
                                               f"full-budget model at {f.get('first_model_share')}x random")
        if arm == "early_stop":
            extra = (f"; at most {f.get('stoppable_share')} of its trial-s stoppable, "
                     f"{f.get('boundary_seconds')} s measuring")
        stops = f" ({f['stopped']} stopped)" if f["stopped"] else ""
        rows.append((f"seed {seed} {arm}", f"hv {f['final_hypervolume']:.4f} in {f['trials']} trials{stops}, "
                     f"{f['trial_seconds']:.0f} trial-s; to random's final hv: "
                     f"{'never' if share is None else f'{share:.2f}x random'}{extra}"))
    return rows


def goals(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's goals from the per-seed figures."""
    def share(s, arm):
        return s["arms"].get(arm, {}).get("share_of_random_seconds")

    def final(s, arm):
        return s["arms"].get(arm, {}).get("final_hypervolume", math.nan)

    tpe_above = [final(s, "tpe") > final(s, "random") for s in seeds]
    early = [share(s, "early_stop") is not None and share(s, "early_stop") <= PAYS for s in seeds]
    fidelity = [share(s, "fidelity") is not None and share(s, "fidelity") <= PAYS
                and (s["arms"]["fidelity"].get("rank_correlation_accuracy") or 0) >= MIN_RANK_CORRELATION for s in seeds]
    need = max(1, math.ceil(2 * len(seeds) / 3))
    return {"tpe_above_random": tpe_above, "early_stop_pays": early, "fidelity_pays": fidelity,
            "met_tpe": all(tpe_above), "met_early_stop": sum(early) >= need, "met_fidelity": sum(fidelity) >= need}


def plot(seeds: list[dict[str, Any]], out: Path) -> None:
    """``out``.png (matplotlib) and ``out``.html (plotly): hypervolume against trial-seconds and trials."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    page = make_subplots(rows=1, cols=2, subplot_titles=("per trial-second", "per trial"))
    for s in seeds:
        for arm, curve in s["curves"].items():
            label = arm if s is seeds[0] else None
            trials = list(range(1, len(curve["hypervolume"]) + 1))
            for k, x in enumerate((curve["seconds"], trials)):
                axes[k].step(x, curve["hypervolume"], where="post", color=COLORS[arm], alpha=0.8, label=label if k == 0 else None)
                page.add_trace(go.Scatter(x=x, y=curve["hypervolume"], mode="lines", line={"shape": "hv", "color": COLORS[arm]},
                                          name=f"{arm} (seed {s['seed']})", legendgroup=arm, showlegend=k == 0), row=1, col=k + 1)
    for ax, xlabel in zip(axes, ("trial-seconds (charged as in a search of its own)", "trials (fidelity: front reruns after the search)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("normalised hypervolume")
        ax.grid(color="#E5ECF6")
    axes[0].legend(loc="lower right")
    fig.suptitle("search efficiency on the fashion_mnist search task (each line one seed)")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    page.update_layout(template="plotly_white", title="search efficiency: normalised hypervolume")
    page.write_html(out.with_suffix(".html"), include_plotlyjs="cdn")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=14)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--work", type=Path, default=None,
                        help="where the runs go (default: a temporary folder); arms left out of --arms are read back from it")
    parser.add_argument("--arms", nargs="*", choices=ARMS, default=list(ARMS),
                        help="arms to run (default: all; none: read every arm back from --work)")
    add_smoke_flag(parser)
    args = parser.parse_args()
    seeds, trials = (1, 2) if args.smoke else (args.seeds, args.trials)
    work = args.work or Path(tempfile.mkdtemp(prefix="frontier-efficiency-"))
    arms = list(SMOKE_ARMS) if args.smoke and args.arms == list(ARMS) else args.arms
    runs = {seed: run_seed(seed, trials, work, args.smoke, arms) for seed in range(seeds)}
    min_accuracy = float(arm_spec("random", 0, trials, args.smoke)["select"].get("min_accuracy") or 0.0)
    figures, table = summarize(runs, min_accuracy)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(figures["seeds"], args.out / "search_efficiency")
    met = goals(figures["seeds"])
    (args.out / "search_efficiency.json").write_text(json.dumps({**figures, "goals": met}, indent=1, default=str))
    line = {"box": figures["box"], "goals": met,
            "seeds": [{"seed": s["seed"], "random_final_hypervolume": round(s["random_final_hypervolume"], 4),
                       "arms": s["arms"]} for s in figures["seeds"]],
            "work": str(work), "plot": str(args.out / "search_efficiency.png")}
    finish(table, line, f"TPE above random on every seed; early stopping or fidelity {FIDELITY} + rerun reaching "
           f"random's final hypervolume in <= {PAYS}x its trial-seconds on 2 of 3 seeds",
           met["met_tpe"] and (met["met_early_stop"] or met["met_fidelity"]), smoke=args.smoke)


if __name__ == "__main__":
    main()
