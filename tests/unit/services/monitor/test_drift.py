"""Jensen-Shannon drift between training densities and live firing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from featurewatch.services.monitor.drift import firing_drift, js_divergence


def test_identical_distributions_have_no_drift_whatever_the_scale():
    p = np.array([0.1, 0.2, 0.0, 0.7])
    assert js_divergence(p, 10 * p) == pytest.approx(0.0, abs=1e-12)


def test_disjoint_firing_is_maximal_and_symmetric():
    p, q = np.array([1.0, 0.0]), np.array([0.0, 3.0])
    assert js_divergence(p, q) == pytest.approx(1.0)
    a, b = np.array([0.5, 0.3, 0.2]), np.array([0.1, 0.1, 0.8])
    assert js_divergence(a, b) == pytest.approx(js_divergence(b, a))


def test_known_value():
    # p = (1, 0), q = (1/2, 1/2): m = (3/4, 1/4)
    expected = 0.5 * math.log2(4 / 3) + 0.5 * (0.5 * math.log2(2 / 3) + 0.5 * math.log2(2))
    assert js_divergence(np.array([1.0, 0.0]), np.array([0.5, 0.5])) == pytest.approx(expected)


def test_firing_drift_uses_fire_counts_and_needs_mass():
    density = np.array([0.5, 0.5, 0.0, 0.0])
    assert firing_drift(density, {0: 10, 1: 10}) == pytest.approx(0.0, abs=1e-12)
    assert firing_drift(density, {2: 10, 3: 5}) == pytest.approx(1.0)
    assert firing_drift(density, {}) is None
    assert firing_drift(np.zeros(4), {0: 1}) is None


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shapes differ"):
        js_divergence(np.ones(2), np.ones(3))
