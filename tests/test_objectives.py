"""The objectives module is the one list of objective names, directions, columns and latency fields."""

from __future__ import annotations

import math

from search.results.rows import BASE_COLUMNS, trial_row
from search.spec.load import parse_spec
from trainables.measure.backends import Latency
from trainables.objectives import DIRECTIONS, LATENCY_FIELDS, OBJECTIVE_NAMES, OBJECTIVES


def test_every_objective_has_a_direction_and_its_column() -> None:
    assert OBJECTIVE_NAMES == ("accuracy", "top5", "size_bytes", "latency_ms", "sparsity")
    assert all(o.direction in DIRECTIONS and o.column == name for name, o in OBJECTIVES.items())
    assert BASE_COLUMNS[4:] == [o.column for o in OBJECTIVES.values()]  # trials.csv's objective columns


def test_a_spec_accepts_every_objective_with_its_natural_direction() -> None:
    raw = {"data": {"target": {"name": "digits"}}, "model": {"name": "small_resnet", "trained_on": "target"},
           "budgets": {"dense": {"epochs": 1}}, "objectives": [{"name": n} for n in OBJECTIVE_NAMES]}
    spec = parse_spec(raw)
    assert spec.directions == [OBJECTIVES[n].direction for n in OBJECTIVE_NAMES]


def test_the_latency_record_has_exactly_the_latency_fields() -> None:
    full = Latency(median_ms=2.0, p90_ms=3.0, batch_size=1, threads=1, runs=3, warmup=0, e2e_median_ms=4.0, iqr_ms=0.5,
                   e2e_p90_ms=5.0).metrics()
    assert set(full) == {"latency_ms", *LATENCY_FIELDS}
    row = trial_row("t1", {"pipeline": "B"}, full, None)
    assert all(row[k] == full[k] for k in LATENCY_FIELDS) and not math.isnan(row["latency_ms"])
