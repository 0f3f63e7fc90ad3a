"""Pareto front and hypervolume against independent implementations and hand-computed cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from search.results.front import hypervolume, pareto_front


def brute_force_front(points, directions) -> list[int]:
    """Non-dominated indices by the definition, with plain Python comparisons."""
    better = {"max": lambda a, b: a > b, "min": lambda a, b: a < b}
    keep = []
    for i, p in enumerate(points):
        dominated = False
        for j, q in enumerate(points):
            no_worse = all(not better[d](p[k], q[k]) for k, d in enumerate(directions))
            strictly = any(better[d](q[k], p[k]) for k, d in enumerate(directions))
            if i != j and no_worse and strictly:
                dominated = True
        if not dominated:
            keep.append(i)
    return keep


@pytest.mark.parametrize("seed", range(5))
def test_front_matches_the_definition_on_random_points(seed: int) -> None:
    rng = np.random.default_rng(seed)
    points = rng.integers(0, 6, size=(40, 3)).astype(float).tolist()  # small ints: many ties
    directions = ["max", "min", "min"]
    assert pareto_front(points, directions) == brute_force_front(points, directions)


def test_front_keeps_duplicates_and_drops_the_dominated() -> None:
    assert pareto_front([[1, 1], [1, 1], [2, 2]], ["min", "min"]) == [0, 1]


def test_hypervolume_2d_staircase_by_hand() -> None:
    # three boxes of the staircase: 1x1 + 1x2 + 1x3 = 6
    assert hypervolume([[1, 3], [2, 2], [3, 1]], ["min", "min"], [4, 4]) == pytest.approx(6.0)


def test_hypervolume_2d_with_a_maximised_objective() -> None:
    # accuracy (max) vs size (min), reference (0, 10): 0.9 x (10 - 6) + (0.5 - 0) x (6 - 2) ... by hand:
    # point A (0.9, 6) dominates [0, 0.9] x [6, 10]: 3.6; B (0.5, 2): [0, 0.5] x [2, 10]: 4.0; overlap [0, 0.5] x [6, 10]: 2.0
    assert hypervolume([[0.9, 6], [0.5, 2]], ["max", "min"], [0, 10]) == pytest.approx(3.6 + 4.0 - 2.0)


def test_hypervolume_3d_by_inclusion_exclusion() -> None:
    ref = [2, 2, 2]
    p, q = [0, 0, 1], [1, 0, 0]
    # |p| = 2*2*1 = 4, |q| = 1*2*2 = 4, |p and q| (corner max(p, q) = (1, 0, 1)) = 1*2*1 = 2
    assert hypervolume([p, q], ["min"] * 3, ref) == pytest.approx(6.0)
    assert hypervolume([[1, 1, 1]], ["min"] * 3, ref) == pytest.approx(1.0)


def test_hypervolume_3d_matches_a_grid_count() -> None:
    rng = np.random.default_rng(7)
    points = rng.integers(0, 5, size=(8, 3))
    ref = np.array([5, 5, 5])
    cells = sum(
        1 for cell in itertools.product(range(5), repeat=3) if any(np.all(points <= np.array(cell), axis=1))
    )  # unit cells [c, c+1) dominated by some point
    assert hypervolume(points, ["min"] * 3, ref) == pytest.approx(cells)


def test_points_beyond_the_reference_add_nothing() -> None:
    assert hypervolume([[5, 5]], ["min", "min"], [4, 4]) == 0.0
    assert hypervolume([[1, 1], [5, 0]], ["min", "min"], [4, 4]) == pytest.approx(9.0)


def test_bad_directions_are_named() -> None:
    with pytest.raises(ValueError, match="directions must be 'max' or 'min' but got 'up'"):
        pareto_front([[1, 2]], ["up", "min"])
