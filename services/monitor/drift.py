"""Drift: how far live feature firing has moved from the training-time feature densities.

Both sides become distributions over the features (each feature's share of all firing): the
training side from the bundle's densities, the live side from fire counts over a window. The
Jensen-Shannon divergence between them, in bits, is 0 for identical firing and 1 for
disjoint firing; unlike KL it stays finite when a feature fires on one side only.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (bits) of two non-negative weight vectors, normalized here."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"shapes differ: {p.shape} vs {q.shape}")
    if p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("both distributions need positive mass")
    p = p / p.sum()
    q = q / q.sum()
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        keep = a > 0
        return float(np.sum(a[keep] * np.log2(a[keep] / m[keep])))

    # Clipped: rounding can leave a -1e-17 for identical inputs.
    return min(max(0.5 * kl(p) + 0.5 * kl(q), 0.0), 1.0)


def firing_drift(training_density: np.ndarray, live_fires: Mapping[int, int]) -> float | None:
    """JS divergence between training densities and live fire counts; None if either is empty."""
    live = np.zeros(len(training_density), dtype=np.float64)
    for feature, count in live_fires.items():
        if 0 <= feature < len(live):
            live[feature] = count
    if live.sum() <= 0 or np.sum(training_density) <= 0:
        return None
    return js_divergence(training_density, live)
