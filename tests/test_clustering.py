"""Weight-sharing clustering: the paper's equal-count rule (sec. III-A) and exact 1-D k-means."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

from trainables.compress import clustering
from trainables.compress.clustering import METHODS, cluster


def sse(values: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> float:
    """Sum of squared errors, computed independently of the module, in float64."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    return float(np.sum((flat - centroids.astype(np.float64)[labels]) ** 2))


def data(kind: str, n: int, seed: int = 0) -> np.ndarray:
    """Weight-like test data: bell-shaped, heavy-tailed, pruned (a spike at 0) or tied values."""
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return rng.normal(0, 0.02, n).astype(np.float32)
    if kind == "heavy":
        return (rng.standard_t(2, n) * 0.01).astype(np.float32)
    if kind == "pruned":
        return (rng.normal(0, 0.02, n) * (rng.random(n) > 0.8)).astype(np.float32)
    return rng.integers(0, 40, n).astype(np.float32) / 10  # "ties": 40 distinct values


KINDS = ("normal", "heavy", "pruned", "ties")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", [1, 2, 16, 256])
def test_shapes_dtypes_ranges_and_order(method: str, k: int) -> None:
    weights = data("normal", 3 * 4 * 5 * 7).reshape(3, 4, 5, 7)
    centroids, labels = cluster(weights, k, method)
    assert centroids.dtype == np.float32 and centroids.shape == (k,)
    assert labels.dtype == np.uint8 and labels.shape == (weights.size,)
    assert labels.min() >= 0 and labels.max() < k
    assert np.all(np.diff(centroids) >= 0), "centroids sorted ascending"
    shared = centroids[labels].reshape(weights.shape)
    assert shared.shape == weights.shape
    assert np.abs(shared - weights).max() <= np.ptp(weights)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n,k", [(1000, 8), (999, 16), (5, 8), (4097, 256)])
def test_equal_is_the_papers_equal_count_rule(kind: str, n: int, k: int) -> None:
    values = data(kind, n, seed=n)
    centroids, labels = cluster(values, k, "equal")
    sizes = np.bincount(labels, minlength=k)
    assert sizes.sum() == n and sizes.max() - sizes.min() <= 1
    for j in np.flatnonzero(sizes):
        assert np.allclose(centroids[j], values[labels == j].astype(np.float64).mean(), rtol=1e-6, atol=1e-9)
    used = np.flatnonzero(sizes)
    for lo, hi in zip(used[:-1], used[1:]):  # contiguous runs in value order (ties may straddle a cut)
        assert values[labels == lo].max() <= values[labels == hi].min()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n,k", [(2000, 2), (5000, 16), (20000, 64), (3000, 256)])
def test_kmeans_is_a_lloyd_fixed_point_below_equal(kind: str, n: int, k: int) -> None:
    values = data(kind, n, seed=k)
    centroids, labels = cluster(values, k, "kmeans")
    flat = values.astype(np.float64)
    distance = np.abs(flat[:, None] - centroids.astype(np.float64)[None, :])
    assigned = distance[np.arange(n), labels]
    assert np.all(assigned <= distance.min(axis=1) + 1e-12), "every value goes to a nearest centroid"
    for j in np.unique(labels):
        assert np.allclose(centroids[j], flat[labels == j].mean(), rtol=1e-6, atol=1e-9), "centroid = mean"
    assert sse(values, centroids, labels) <= sse(values, *cluster(values, k, "equal")) * (1 + 1e-9)
    distinct = np.unique(values).size
    assert np.unique(labels).size == min(k, distinct), "no cluster left empty while values remain"


def test_kmeans_finds_well_separated_groups_of_unequal_size() -> None:
    rng = np.random.default_rng(1)
    centres, sizes = [-10.0, -3.0, 0.5, 2.0, 8.0, 9.5, 20.0, 31.0], [100, 3000, 7, 500, 60, 1200, 1, 250]
    groups = [rng.normal(c, 0.05, s) for c, s in zip(centres, sizes)]
    values = rng.permutation(np.concatenate(groups)).astype(np.float32)
    centroids, labels = cluster(values, 8)
    expected = np.searchsorted(np.array(centres[:-1]) + np.diff(centres) / 2, values)
    assert np.array_equal(labels, expected)
    means = [values[expected == j].astype(np.float64).mean() for j in range(8)]
    assert np.allclose(centroids, means, rtol=1e-6, atol=1e-6)


def test_kmeans_matches_or_beats_sklearn() -> None:
    values = data("normal", 20000, seed=3)
    centroids, labels = cluster(values, 16)
    reference = KMeans(n_clusters=16, n_init=1, random_state=0).fit(values.reshape(-1, 1).astype(np.float64))
    theirs = sse(values, reference.cluster_centers_.ravel(), reference.labels_)
    assert sse(values, centroids, labels) <= 1.01 * theirs


def test_k1_is_the_mean_and_few_distinct_values_give_zero_error() -> None:
    values = data("normal", 1001)
    for method in METHODS:
        centroids, labels = cluster(values, 1, method)
        assert np.allclose(centroids[0], values.astype(np.float64).mean(), rtol=1e-6, atol=1e-9)
        assert not labels.any()
    tensor = torch.tensor(np.random.default_rng(2).choice(np.linspace(-1, 1, 10), (64, 3, 3, 3)), dtype=torch.float32)
    centroids, labels = cluster(tensor, 256)
    assert centroids.shape == (256,) and np.all(np.diff(centroids) >= 0)
    assert np.array_equal(centroids[labels].reshape(tensor.shape), tensor.numpy())
    assert sse(tensor.numpy(), centroids, labels) == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_torch_input_gives_the_numpy_answer(dtype: torch.dtype) -> None:
    tensor = torch.randn(16, 8, 3, 3, generator=torch.Generator().manual_seed(0)).to(dtype)
    reference = tensor.float().numpy() if dtype != torch.float64 else tensor.numpy()
    for method in METHODS:
        got, want = cluster(tensor, 16, method), cluster(reference, 16, method)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_deterministic() -> None:
    values = data("heavy", 30000)
    first, second = cluster(values, 64), cluster(values.copy(), 64)
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])


@pytest.mark.parametrize("k", [0, 3, 512, -2, 2.0, True])
def test_bad_k_is_named(k: object) -> None:
    with pytest.raises(ValueError, match=rf"k must be a power of two in \[1, 256\] but got {k!r}"):
        cluster(np.ones(10), k)  # type: ignore[arg-type]


def test_bad_method_empty_and_non_finite_weights_are_named() -> None:
    with pytest.raises(ValueError, match=r"method must be one of \('equal', 'kmeans'\) but got 'median'"):
        cluster(np.ones(10), 2, "median")
    with pytest.raises(ValueError, match=r"weights must not be empty but got shape \(0, 3\)"):
        cluster(np.ones((0, 3)), 2)
    with pytest.raises(ValueError, match=r"weights must be finite but got 2 NaN or inf"):
        cluster(np.array([1.0, np.nan, np.inf, 0.0]), 2)


def test_docstring_example_runs() -> None:
    assert doctest.testmod(clustering).failed == 0
