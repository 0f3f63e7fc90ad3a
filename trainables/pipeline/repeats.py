"""A trial of ``repeats: k``: its plan run with k seeds, and the one result the search hears of it.

The spec's ``repeats: k`` (the EPruning paper reports the mean of 5 runs) makes every trial run its
plan k times, with seeds ``seed``, ``seed + 1``, ... ``seed + k - 1``
(:meth:`~trainables.pipeline.plan.Plan.repeat`), one after the other, inside one Ray trial
(:func:`~trainables.pipeline.run.tune_trial`), and report :func:`aggregate` of the k results: each
objective's mean, which is what Optuna is told (one value per objective), with its spread beside.

**Why one trial runs the k seeds in turn**, rather than k Ray trials per Optuna trial:

- *Early stopping* judges a trial at a stage boundary against the trials that reached it
  (:mod:`search.run.early_stop`). Only the first run (the spec's seed, the seed every trial's first
  run has) measures its boundaries, so trials are compared on equal terms and a stopped trial has
  spent one run's stages, not k. With k trials the scheduler would see k noisy copies of a plan, and
  stopping one of them would leave a mean of fewer seeds.
- *Resume*: the trial's checkpoint after each finished run keeps that run's result
  (``repeats.json`` beside ``progress.json``), so a retried or resumed trial goes on with the next
  run, or within a run after its last finished stage, as any trial does.
- *The progress line* and the result contract stay as they are: a trial reports ``stage_index`` out
  of ``stages`` = k x the plan's steps (:mod:`trainables.pipeline.result`), and one row, one Optuna
  trial, one ``status``.
- ``frontier rerun`` replays the plan, which carries ``repeats``, so it reruns the k seeds too.
- *The stage cache*: the k runs share one trial's cache holds, and a stage whose output does not
  depend on the seed (:attr:`~trainables.pipeline.plan._Step.seeded` False: the dense model loaded
  as it is, sharing without retraining) has a key without the seed, so the second run reads what the
  first computed. A stage that trains keeps the seed in its key, as it always has.

The price is that one trial's runs do not run in parallel; the search's ``concurrency`` still runs
several trials at once.

No torch here: the driver's light commands read these names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..objectives import OBJECTIVE_NAMES

REPEATS = "repeats"  # the result key (and trials.csv column): how many seeds a trial's values are the mean of
REPEAT_PREFIX = "repeat."  # repeat.<r>.<objective>: run r's own value (seed ``seed + r``)
PER_RUN_TEXT = ("cached_stages", "resumed_at")  # text each run has its own of: joined by ';', run 0 first


def std_column(name: str) -> str:
    """The key (and ``trials.csv`` column) of objective ``name``'s standard deviation over the seeds."""
    return f"{name}_std"


def repeat_column(index: int, name: str) -> str:
    """The key of run ``index``'s own value of ``name`` (``repeat.1.accuracy``)."""
    return f"{REPEAT_PREFIX}{index}.{name}"


REPEAT_FIELDS = (REPEATS, *(std_column(name) for name in OBJECTIVE_NAMES))  # trials.csv columns beside the objectives


def aggregate(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The result of a trial from its runs' final results ``results`` (run 0, the spec's seed, first).

    One run: its result, unchanged. Several (``k``):

    - every objective of :data:`~trainables.objectives.OBJECTIVE_NAMES` is the runs' **mean**, with
      its sample standard deviation (``<name>_std``, k - 1 in the denominator) and each run's value
      (``repeat.<r>.<name>``); ``repeats`` is k;
    - ``accuracy_se`` is the standard error of the mean accuracy, :func:`mean_accuracy_se`;
    - ``seconds.<slot>`` and ``compute.<slot>`` are the sums over the runs (what the trial spent
      there, and what its stages cost when they were computed);
    - ``cached_stages`` and ``resumed_at`` are each run's, joined by ``;`` (``";D"``: run 1 read D
      from the cache);
    - any other number is the runs' mean where they differ and as it is where they agree
      (``latency_iqr_ms``, the mean timing noise of one run; ``accuracy_n``, the test images);
    - any other value (text: the pipeline, the latency backend) is run 0's.

    A key run 0 lacks is left out. An objective that is not finite in some run makes its mean not
    finite, which the result contract calls a failure (:func:`~trainables.pipeline.result.final_result`).

    Example:
        >>> runs = [{"accuracy": 0.90, "accuracy_n": 100, "seconds.T": 2.0, "cached_stages": ""},
        ...         {"accuracy": 0.94, "accuracy_n": 100, "seconds.T": 1.5, "cached_stages": "D"}]
        >>> out = aggregate(runs)
        >>> round(out["accuracy"], 4), round(out["accuracy_std"], 4), out["repeats"], out["seconds.T"]
        (0.92, 0.0283, 2, 3.5)
        >>> out["cached_stages"], out["repeat.1.accuracy"], out["accuracy_n"]
        (';D', 0.94, 100)
    """
    if not results:
        raise ValueError("aggregate: no runs")
    if len(results) == 1:
        return dict(results[0])
    k = len(results)
    out: dict[str, Any] = {}
    for key, first in results[0].items():
        values = [run.get(key) for run in results]
        if key.startswith(("seconds.", "compute.")):
            out[key] = float(sum(v for v in values if _number(v)))
        elif key in PER_RUN_TEXT:
            out[key] = ";".join("" if v is None else str(v) for v in values)
        elif _number(first) and all(_number(v) for v in values):
            out[key] = first if all(v == first for v in values) else _mean(values)
        else:
            out[key] = first
    for name in OBJECTIVE_NAMES:
        values = [run.get(name) for run in results]
        if name not in results[0]:
            continue
        numbers = [float(v) if _number(v) else math.nan for v in values]
        out[name] = _mean(numbers)
        out[std_column(name)] = _std(numbers)
        out.update({repeat_column(r, name): v for r, v in enumerate(numbers)})
    if "accuracy" in out:
        se = mean_accuracy_se(out["accuracy"], out.get("accuracy_n"), out[std_column("accuracy")], k,
                              [run.get("accuracy_se") for run in results])
        out["accuracy_se"] = se
    out[REPEATS] = k
    return out


def mean_accuracy_se(mean: float, n: Any, std: float, k: int, run_se: Sequence[Any] = ()) -> float:
    """The standard error of a mean accuracy ``mean`` over ``k`` seeds, measured on ``n`` test images.

    ``sqrt(mean * (1 - mean) / n + std**2 / k)``: two independent sources of error.

    - The test split: every run is measured on the same ``n`` images, so their sampling error is
      shared by the k runs and averaging does not shrink it; it is the binomial standard error of
      the mean accuracy, as for one run (:func:`~trainables.objectives.accuracy_error`).
    - The seed: the runs' sample standard deviation ``std`` over ``k`` seeds gives the standard error
      ``std / sqrt(k)`` of their mean.

    At k = 1 (no spread) it is the binomial standard error. Where ``n`` is unknown the runs' own
    ``accuracy_se`` (``run_se``, their root mean square) stands in for the first term. The front
    treats two accuracies within 1.96 * sqrt(se_a**2 + se_b**2) as equal, with this ``se``.

    Example:
        >>> round(mean_accuracy_se(0.9, 900, 0.0, 5), 4)  # no spread over the seeds: the binomial error
        0.01
        >>> round(mean_accuracy_se(0.9, 900, 0.02, 4), 4)  # sqrt(0.01**2 + 0.02**2 / 4)
        0.0141
    """
    if _number(n) and n >= 1:
        test = max(mean * (1.0 - mean), 0.0) / float(n)
    else:
        known = [float(v) ** 2 for v in run_se if _number(v)]
        test = sum(known) / len(known) if known else math.nan
    seed = std ** 2 / k if k > 1 else 0.0
    return math.sqrt(test + seed)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values))


def _std(values: Sequence[float]) -> float:
    """The sample standard deviation (k - 1 in the denominator); 0 for a single value."""
    if len(values) < 2:
        return 0.0
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))

