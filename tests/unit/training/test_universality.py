"""Best-match correlations between two code sets on the same tokens, on constructed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from featurewatch.errors import ConfigError
from featurewatch.training.feature_stats import collect_codes
from featurewatch.training.universality import best_correlations, compare, similarity


def _codes(dense: np.ndarray):
    return collect_codes(torch.from_numpy(dense.astype(np.float32)), None)


def _sparse_matrix(n: int, d: int, density: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((n, d)) * (rng.random((n, d)) < density)


def _brute_force(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    corr = np.corrcoef(a.T, b.T)[: a.shape[1], a.shape[1]:]
    return np.nanmax(corr, axis=1)


def test_permuted_copy_matches_perfectly_with_the_right_index():
    a = _sparse_matrix(2000, 12, 0.02, 0)
    perm = np.random.default_rng(1).permutation(12)
    best, index = best_correlations(_codes(a), _codes(a[:, perm]))
    np.testing.assert_allclose(best, 1.0, atol=1e-6)
    np.testing.assert_array_equal(perm[index], np.arange(12))


@pytest.mark.parametrize("density", [0.01, 0.3])  # sparse product and dense matmul paths
def test_matches_brute_force_pearson(density):
    a, b = _sparse_matrix(1500, 9, density, 2), _sparse_matrix(1500, 14, density, 3)
    b[:, 4] = a[:, 2] * 2 + 0.1 * b[:, 4]  # one strongly related pair
    best, index = best_correlations(_codes(a), _codes(b))
    np.testing.assert_allclose(best, _brute_force(a, b), atol=1e-5)
    assert index[2] == 4 and best[2] > 0.95


def test_codes_that_never_cofire_get_their_exact_negative_correlation():
    a = np.zeros((100, 1))
    a[:10, 0] = 1.0
    b = np.zeros((100, 2))
    b[50:70, 0] = 1.0
    b[80:, 1] = 2.0
    best, index = best_correlations(_codes(a), _codes(b))
    assert best[0] == pytest.approx(_brute_force(a, b)[0])
    assert best[0] < 0 and index[0] == -1


def test_dead_codes_are_nan_and_left_out_of_medians():
    a = _sparse_matrix(500, 4, 0.05, 4)
    a[:, 3] = 0.0
    neurons = _sparse_matrix(500, 3, 0.5, 5)
    result = compare(_codes(a), _codes(a), _codes(neurons), _codes(neurons[:, ::-1]))
    assert math.isnan(result.feature_best_corr[3]) and result.feature_match[3] == -1
    section = result.to_json(_codes(a).counts(), _codes(neurons).counts(), min_fires=1)
    assert section["n_features"] == 3 and section["median_feature"] == pytest.approx(1.0)
    assert section["median_neuron"] == pytest.approx(1.0)
    assert sum(section["histogram"]["features"]) == 3
    assert len(section["histogram"]["edges"]) == len(section["histogram"]["features"]) + 1


def test_cosine_similarity_is_uncentred():
    a = np.zeros((10, 1))
    a[:4, 0] = 1.0
    b = np.zeros((10, 1))
    b[:2, 0] = 1.0
    sims = similarity(_codes(a), _codes(b), centered=False)
    assert sims[0, 0] == pytest.approx(2 / (2 * math.sqrt(2)))


def test_codes_on_different_tokens_are_refused():
    with pytest.raises(ConfigError, match="different tokens"):
        best_correlations(_codes(np.eye(5)), _codes(np.eye(6)[:, :5]))
