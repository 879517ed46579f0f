"""Contrastive search finds a planted discriminating feature with the right threshold."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import yaml

from featurewatch.errors import ConfigError
from featurewatch.training.contrastive import (
    Candidate,
    flag_entries,
    flags_yaml,
    rank_separating,
    read_examples,
    search_labels,
)


def _planted(seed: int = 0):
    rng = np.random.default_rng(seed)
    pos = rng.random((30, 50)) * (rng.random((30, 50)) < 0.3)
    neg = rng.random((40, 50)) * (rng.random((40, 50)) < 0.3)
    pos[:, 7] = rng.uniform(2.0, 3.0, 30)
    neg[:, 7] = rng.uniform(0.0, 0.5, 40)
    return pos, neg


def test_planted_feature_ranks_first_with_midpoint_threshold():
    pos, neg = _planted()
    best = rank_separating(pos, neg, top=5)[0]
    assert best.feature == 7
    assert best.precision == 1.0 and best.recall == 1.0 and best.f1 == 1.0
    assert best.threshold == pytest.approx((pos[:, 7].min() + neg[:, 7].max()) / 2)
    assert best.positive_mean == pytest.approx(pos[:, 7].mean())


def test_overlapping_feature_reports_its_best_precision_and_recall():
    pos = np.array([[3.0], [2.0], [1.0], [0.0]])
    neg = np.array([[2.5], [0.5], [0.0], [0.0]])
    best = rank_separating(pos, neg)[0]
    # cuts: ≥3 → P1 R.25 F1 .4; ≥2.5 → P.5 R.25; ≥2 → P.67 R.5 F1 .57;
    #       ≥1 → P.75 R.75 F1 .75 (the best)
    assert best.threshold == pytest.approx(0.75)  # between 1.0 and the next value, 0.5
    assert (best.precision, best.recall, best.f1) == pytest.approx((0.75, 0.75, 0.75))


def test_ties_are_never_split_and_silent_features_are_dropped():
    pos = np.array([[1.0, 0.0], [1.0, 0.0]])
    neg = np.array([[1.0, 0.0], [0.0, 0.0]])
    ranked = rank_separating(pos, neg)
    assert [c.feature for c in ranked] == [0]
    assert ranked[0].threshold == pytest.approx(0.5) and ranked[0].precision == pytest.approx(2 / 3)


def test_flag_file_is_the_monitor_format():
    pos, neg = _planted()
    ranked = rank_separating(pos, neg, top=2)
    labels = [f"label {i}" for i in range(50)]
    text = flags_yaml(flag_entries(ranked, "a1-4096", labels, "critical", "https://rb/x"),
                      ["made by a test"])
    assert text.startswith("# made by a test\n")
    flags = yaml.safe_load(text)["flags"]
    assert flags[0] == {"dictionary": "a1-4096", "feature": 7, "name": "label 7",
                        "severity": "critical",
                        "min_activation": float(f"{ranked[0].threshold:.6g}"),
                        "runbook_url": "https://rb/x"}


def test_read_examples_formats_and_errors(tmp_path):
    (tmp_path / "a.txt").write_text("first\n\n second \n")
    assert read_examples(tmp_path / "a.txt") == ["first", " second "]
    (tmp_path / "b.jsonl").write_text('{"text": "x"}\n"y"\n')
    assert read_examples(tmp_path / "b.jsonl") == ["x", "y"]
    (tmp_path / "c.jsonl").write_text('{"text": 1}\n')
    with pytest.raises(ConfigError, match="c.jsonl:1"):
        read_examples(tmp_path / "c.jsonl")
    (tmp_path / "d.txt").write_text("\n\n")
    with pytest.raises(ConfigError, match="no examples"):
        read_examples(tmp_path / "d.txt")
    with pytest.raises(ConfigError, match="does not exist"):
        read_examples(tmp_path / "missing.txt")


def test_bad_activation_shapes_are_refused():
    with pytest.raises(ConfigError, match="same d"):
        rank_separating(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ConfigError, match="at least one positive"):
        rank_separating(np.zeros((0, 3)), np.zeros((2, 3)))


def test_search_labels_needs_every_word_and_ranks_exact_phrase_first():
    table = pl.DataFrame({"feature": [0, 1, 2, 3], "label": ["base64 strings", "strings of base64",
                                                            "Arabic script", "BASE64 Strings"],
                          "interp_score": [0.5, 0.9, 0.8, None], "density": [0.1] * 4})
    hits = search_labels(table, "base64 strings")
    assert hits["feature"].to_list() == [0, 3, 1]
    with pytest.raises(ConfigError, match="--label"):
        search_labels(table, "  ")


def test_flag_file_survives_odd_comments_labels_and_thresholds(tmp_path):
    from featurewatch.services.monitor.flags import read_flags_file

    tiny = Candidate(3, 4e-7, 1.0, 1.0, 1.0, 1e-6, 0.0)
    other = Candidate(1, 2.5, 1.0, 0.5, 0.67, 3.0, 0.0)
    labels = ["x", "   ", "y", "  " + "z" * 300]
    entries = flag_entries([tiny, other], "d", labels, "warning", "")
    assert entries[0]["min_activation"] == 4e-7  # not rounded to 0, which would flag all
    assert entries[0]["name"] == "z" * 80 and entries[1]["name"] == "feature 1"
    # a feature beyond the label list (a stale table) is named by its id
    assert flag_entries([Candidate(9, 1.0, 1, 1, 1, 1, 0)], "d", labels, "info",
                        "")[0]["name"] == "feature 9"
    path = tmp_path / "flags.yaml"
    path.write_text(flags_yaml(entries, ["search for 'a\nflags: []'", "second"]))
    assert path.read_text().startswith("# search for 'a\n# flags: []'\n# second\n")
    assert [(f.feature, f.min_activation) for f in read_flags_file(path)] == [(3, 4e-7),
                                                                              (1, 2.5)]
