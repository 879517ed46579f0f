"""Universality: do two models that differ only in their seed learn the same features?

For each code (feature or neuron) of model A, the best Pearson correlation of its activations
with any code of model B on the same tokens (the paper: median 0.72 for features vs 0.46 for
neurons). Similarities come from the co-moments Σ_t a_i(t) b_j(t): for sparse dictionaries a
sparse × sparse product costs about n_tokens · L0_A · L0_B, for dense neurons one dense matmul.
`splitting` uses the same co-moments for activation cosine similarity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from featurewatch.errors import ConfigError
from featurewatch.training.feature_stats import SparseCodes

DENSE_FRACTION = 0.05  # above this fraction of non-zeros a dense matmul beats sparse products
HIST_BINS = 20


def _csr(codes: SparseCodes) -> sp.csr_matrix:
    """codes as [d, n_tokens] CSR (the canonical (feature, token) order is CSR already)."""
    return sp.csr_matrix((codes.value.astype(np.float64), codes.token, codes.starts()),
                         shape=(codes.d, codes.n_tokens))


def _moments(codes: SparseCodes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, standard deviation, L2 norm) of every code over all tokens (zeros included)."""
    n = codes.n_tokens
    s1 = np.bincount(codes.feature, weights=codes.value, minlength=codes.d)
    s2 = np.bincount(codes.feature, weights=codes.value.astype(np.float64) ** 2,
                     minlength=codes.d)
    mean = s1 / n
    return mean, np.sqrt(np.maximum(s2 / n - mean ** 2, 0.0)), np.sqrt(s2)


def _dense_comoments(a: SparseCodes, b: SparseCodes, chunk: int = 16384) -> np.ndarray:
    """Σ_t a(t) b(t)ᵀ [d_a, d_b] by dense float32 products over token chunks (float64 sum)."""
    a_cols, b_cols = _csr(a).tocsc(), _csr(b).tocsc()  # column slices of CSC are cheap
    out = np.zeros((a.d, b.d))
    for start in range(0, a.n_tokens, chunk):
        xa = torch.from_numpy(a_cols[:, start: start + chunk].toarray().astype(np.float32))
        xb = torch.from_numpy(b_cols[:, start: start + chunk].toarray().astype(np.float32))
        out += (xa @ xb.T).double().numpy()
    return out


def _row_max(m: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Largest stored value of each row and its column (−inf, −1 for empty rows).

    scipy's own max counts the implicit zeros, which here are not similarities of 0.
    """
    best, arg = np.full(m.shape[0], -np.inf), np.full(m.shape[0], -1, dtype=np.int64)
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    if len(rows):
        order = np.lexsort((-m.data, rows))
        first = order[np.concatenate([[0], np.flatnonzero(np.diff(rows[order])) + 1])]
        best[rows[first]], arg[rows[first]] = m.data[first], m.indices[first]
    return best, arg


def comoments(a: SparseCodes, b: SparseCodes) -> sp.csr_matrix:
    """Σ_t a_i(t) b_j(t) as a [d_a, d_b] matrix (sparse; zeros where i and j never co-fire)."""
    if a.n_tokens != b.n_tokens:
        raise ConfigError(f"codes cover different tokens ({a.n_tokens} vs {b.n_tokens}); "
                          "universality and splitting compare codes on the same tokens")
    fill = max(len(a.value) / max(a.d * a.n_tokens, 1), len(b.value) / max(b.d * b.n_tokens, 1))
    if fill > DENSE_FRACTION:
        return sp.csr_matrix(_dense_comoments(a, b))
    return (_csr(a) @ _csr(b).T).tocsr()


def similarity(a: SparseCodes, b: SparseCodes, *, centered: bool) -> sp.csr_matrix:
    """Pearson correlation (centered) or cosine similarity of every co-firing pair (i, j).

    Pairs that never fire together are left out: their cosine is 0 and their correlation
    is −μ_i μ_j / (σ_i σ_j) ≤ 0 (`never_cofire_correlation`).
    """
    m = comoments(a, b).tocoo()
    rows, cols = m.row, m.col
    mean_a, std_a, norm_a = _moments(a)
    mean_b, std_b, norm_b = _moments(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        if centered:
            cov = m.data / a.n_tokens - mean_a[rows] * mean_b[cols]
            values = cov / (std_a[rows] * std_b[cols])
        else:
            values = m.data / (norm_a[rows] * norm_b[cols])
    values = np.nan_to_num(np.clip(values, -1.0, 1.0), nan=0.0, posinf=0.0, neginf=0.0)
    return sp.csr_matrix((values, (rows, cols)), shape=(a.d, b.d))


def never_cofire_correlation(a: SparseCodes, b: SparseCodes) -> np.ndarray:
    """Best correlation of each A code with a B code it never fires together with: −μ/σ·min."""
    mean_a, std_a, _ = _moments(a)
    mean_b, std_b, _ = _moments(b)
    live_b = std_b > 0
    ratio_b = (mean_b[live_b] / std_b[live_b]).min() if live_b.any() else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        out = -np.where(std_a > 0, mean_a / std_a, 0.0) * ratio_b
    return out


def best_correlations(a: SparseCodes, b: SparseCodes) -> tuple[np.ndarray, np.ndarray]:
    """(best Pearson correlation, index of that B code) for every A code.

    Codes of A that never fire get NaN and index −1.
    """
    corr = similarity(a, b, centered=True)
    best = never_cofire_correlation(a, b)
    row_max, arg = _row_max(corr)
    better = row_max > best
    best, index = np.where(better, row_max, best), np.where(better, arg, -1)
    _, std_a, _ = _moments(a)
    best = np.where(std_a > 0, best, math.nan)
    return best, np.where(std_a > 0, index, -1)


@dataclass(frozen=True)
class UniversalityResult:
    """Best-match correlations of A's features and neurons with B's, and their summaries."""

    feature_best_corr: np.ndarray
    neuron_best_corr: np.ndarray
    feature_match: np.ndarray
    neuron_match: np.ndarray

    def to_json(self, counts_features: np.ndarray, counts_neurons: np.ndarray,
                min_fires: int) -> dict:
        """analysis.json's universality section (codes firing < min_fires times left out)."""
        feats = self.feature_best_corr[(counts_features >= min_fires)
                                       & ~np.isnan(self.feature_best_corr)]
        neurons = self.neuron_best_corr[(counts_neurons >= min_fires)
                                        & ~np.isnan(self.neuron_best_corr)]
        edges = np.linspace(-1.0, 1.0, 2 * HIST_BINS + 1)
        return {
            "median_feature": _median(feats), "median_neuron": _median(neurons),
            "n_features": int(len(feats)), "n_neurons": int(len(neurons)),
            "min_fires": min_fires,
            "feature_best_corr": [round(float(v), 4) for v in feats],
            "neuron_best_corr": [round(float(v), 4) for v in neurons],
            "histogram": {"edges": [round(float(e), 3) for e in edges],
                          "features": np.histogram(feats, edges)[0].tolist(),
                          "neurons": np.histogram(neurons, edges)[0].tolist()},
        }


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if len(values) else None


def compare(features_a: SparseCodes, features_b: SparseCodes, neurons_a: SparseCodes,
            neurons_b: SparseCodes) -> UniversalityResult:
    """Best matches of A's features among B's features and of A's neurons among B's neurons."""
    f_best, f_idx = best_correlations(features_a, features_b)
    n_best, n_idx = best_correlations(neurons_a, neurons_b)
    return UniversalityResult(f_best, n_best, f_idx, n_idx)
