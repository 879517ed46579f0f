"""Feature splitting: a feature of the small dictionary links to the features it splits into."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featurewatch.training.feature_stats import collect_codes
from featurewatch.training.splitting import Level, link, split_report


def _codes(dense: np.ndarray):
    return collect_codes(torch.from_numpy(dense.astype(np.float32)), None)


def _run(n: int = 3000, seed: int = 0):
    """small: 3 features; medium: feature 0 splits in two; large: each half splits again."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 4, n)                 # which fine-grained context a token is in
    fires = rng.random(n) < 0.2
    acts = rng.uniform(1, 2, n) * fires
    small = np.zeros((n, 3))
    small[:, 0] = acts                           # fires in all four contexts
    small[:, 1] = rng.random(n) < 0.05           # unrelated features
    small[:, 2] = rng.random(n) < 0.05
    medium = np.zeros((n, 4))
    medium[:, 0] = acts * (kind < 2)
    medium[:, 1] = acts * (kind >= 2)
    medium[:, 2:] = small[:, 1:]
    large = np.zeros((n, 6))
    for k in range(4):
        large[:, k] = acts * (kind == k)
    large[:, 4:] = small[:, 1:]
    return small, medium, large


def _levels():
    small, medium, large = _run()
    return [Level(name, _codes(m), [f"{name}-{i}" for i in range(m.shape[1])],
                  (m > 0).mean(0)) for name, m in (("s", small), ("m", medium), ("l", large))]


def test_link_finds_the_halves_with_their_cosine():
    small, medium, _ = _run()
    children = link(_codes(small), _codes(medium), 0.4, 8)
    assert sorted(c for c, _ in children[0]) == [0, 1]
    for c, sim in children[0]:
        a, b = small[:, 0], medium[:, c]
        assert sim == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), abs=1e-4)
        assert 0.6 < sim < 0.8  # half of the activation mass each: cosine ≈ 1/√2
    assert children[1] == [(2, pytest.approx(1.0))]


def test_threshold_and_max_children_limit_links():
    small, _, large = _run()
    assert link(_codes(small), _codes(large), 0.6, 8)[0] == []  # quarters: cosine ≈ 1/2
    assert len(link(_codes(small), _codes(large), 0.4, 2)[0]) == 2


def test_split_report_follows_one_feature_through_every_size():
    report = split_report(_levels()[::-1], 0.4, 8)  # any order in, sorted by size out
    assert report["dictionaries"] == ["s", "m", "l"]
    example = report["example"]
    assert (example["dictionary"], example["feature"], example["label"]) == ("s", 0, "s-0")
    levels = example["levels"]
    assert [len(lv["features"]) for lv in levels] == [1, 2, 4]
    assert sorted(f["feature"] for f in levels[2]["features"]) == [0, 1, 2, 3]
    for entry in levels[2]["features"]:
        parent = entry["parents"][0][0]
        assert parent == (0 if entry["feature"] < 2 else 1)
    first = [lk for lk in report["links"] if lk["from"] == "s" and lk["feature"] == 0][0]
    assert first["to"] == "m" and sorted(c for c, _ in first["children"]) == [0, 1]


def test_a_single_dictionary_has_no_links_or_example():
    report = split_report(_levels()[:1], 0.4, 8)
    assert report["links"] == [] and report["example"] is None
