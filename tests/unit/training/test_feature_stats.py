"""Feature statistics on a planted model and dictionary, where every answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from planted_model import (
    ACT,
    FEATURES,
    HOOK,
    PLANTED,
    VOCAB,
    planted_dictionary,
    planted_model,
    planted_tokens,
)

from featurewatch.errors import ConfigError
from featurewatch.training import feature_stats as fs
from featurewatch.training.analyze import harvest_activations

TOP_K, WINDOW = 6, 3


@pytest.fixture(scope="module")
def planted():
    tokens = planted_tokens()
    acts = harvest_activations(planted_model(), HOOK, tokens.astype(np.int64), 16)
    codes = fs.collect_codes(acts, planted_dictionary().encode, chunk=100)
    return tokens, acts, codes


def test_activations_are_one_hot_neurons(planted):
    tokens, acts, _ = planted
    expected = torch.zeros_like(acts)
    expected[torch.arange(len(acts)), torch.from_numpy(tokens.reshape(-1).astype(np.int64))] = ACT
    torch.testing.assert_close(acts, expected, atol=1e-4, rtol=0)


def test_density_mean_max_match_token_counts(planted):
    tokens, _, codes = planted
    counts = np.bincount(tokens.reshape(-1), minlength=VOCAB)
    stats = fs.basic_stats(codes)
    n = tokens.size
    assert stats.density[PLANTED] == pytest.approx((counts[PLANTED] + counts[PLANTED + 1]) / n)
    assert stats.density[0] == pytest.approx(counts[0] / n)
    assert (stats.density[VOCAB:] == 0).all() and (stats.max_activation[VOCAB:] == 0).all()
    mean5 = (counts[PLANTED] * ACT + counts[PLANTED + 1] * ACT / 2) / (counts[PLANTED]
                                                                        + counts[PLANTED + 1])
    assert stats.mean_activation[PLANTED] == pytest.approx(mean5, rel=1e-4)
    assert stats.max_activation[PLANTED] == pytest.approx(ACT, rel=1e-4)


def test_lookup_returns_activation_or_zero(planted):
    tokens, _, codes = planted
    flat = tokens.reshape(-1)
    where5, where7 = np.flatnonzero(flat == PLANTED)[:3], np.flatnonzero(flat == 7)[:3]
    got = codes.lookup(np.full(6, PLANTED), np.concatenate([where5, where7]))
    np.testing.assert_allclose(got, [ACT] * 3 + [0.0] * 3, rtol=1e-4)


def test_top_examples_are_the_planted_token_with_true_windows(planted):
    tokens, _, codes = planted
    top = fs.top_positions(codes, TOP_K)
    examples = fs.build_examples(codes, top, ["top"] * len(top), tokens, WINDOW)
    lo, hi = np.searchsorted(examples.feature, [PLANTED, PLANTED + 1])
    assert hi - lo == TOP_K
    flat = tokens.reshape(-1)
    vocab = [f"t{i}" for i in range(VOCAB)]
    for ex in examples.examples(PLANTED, vocab):
        assert ex.tokens[ex.center] == f"t{PLANTED}"
        assert ex.activations[ex.center] == pytest.approx(ACT, rel=1e-4)
        assert len(ex.tokens) <= 2 * WINDOW + 1
        # every token of the window carries the feature's true activation on it
        expect = {f"t{PLANTED}": ACT, f"t{PLANTED + 1}": ACT / 2}
        for tok, act in zip(ex.tokens, ex.activations, strict=True):
            assert act == pytest.approx(expect.get(tok, 0.0), rel=1e-4, abs=1e-6)
    # windows never cross a context boundary: centre positions near the start are clipped
    centers = codes.token[top[lo:hi]]
    pos = centers % tokens.shape[1]
    assert (examples.center[lo:hi] == np.minimum(pos, WINDOW)).all()
    assert set(flat[centers]) == {PLANTED}


def test_interval_examples_cover_both_levels_and_skip_top(planted):
    tokens, _, codes = planted
    stats = fs.basic_stats(codes)
    top = fs.top_positions(codes, TOP_K)
    pos, interval = fs.interval_positions(codes, stats.max_activation, 4, 3,
                                          np.random.default_rng(0), exclude=top)
    mine = codes.feature[pos] == PLANTED
    # ACT/2 falls in interval 2 of 4, ACT in the last one
    assert sorted(set(interval[mine])) == [2, 3]
    assert np.isin(pos, top).sum() == 0
    assert (np.bincount(interval[mine]) <= 3).all()
    labels = fs.interval_labels(stats.max_activation, codes.feature[pos], interval, 4)
    assert labels[int(np.flatnonzero(mine & (interval == 2))[0])] == \
        f"{ACT / 2:.3g}-{3 * ACT / 4:.3g}"


def test_histograms_count_nonzero_activations(planted):
    tokens, _, codes = planted
    stats = fs.basic_stats(codes)
    edges, counts = fs.histograms(codes, stats.max_activation, 8)
    flat = tokens.reshape(-1)
    assert counts[PLANTED].sum() == (flat == PLANTED).sum() + (flat == PLANTED + 1).sum()
    assert counts[PLANTED][-1] == (flat == PLANTED).sum()
    assert counts[PLANTED][4] == (flat == PLANTED + 1).sum()  # ACT/2 opens bin 4 of 8
    assert edges[PLANTED][-1] == pytest.approx(ACT, rel=1e-4)
    assert counts[FEATURES - 1].sum() == 0


def test_random_examples_share_windows_across_features(planted):
    tokens, _, codes = planted
    vocab = [f"t{i}" for i in range(VOCAB)]
    out = fs.random_examples(codes, np.array([PLANTED, 0]), tokens, vocab, 5, WINDOW,
                             np.random.default_rng(1))
    assert [ex.tokens for ex in out[PLANTED]] == [ex.tokens for ex in out[0]]
    for ex in out[0]:
        assert ex.activations == pytest.approx([ACT if t == "t0" else 0.0 for t in ex.tokens],
                                               rel=1e-4)


def test_bf16_encoder_matches_float32_to_bf16_precision(planted):
    _, acts, codes = planted
    fast = fs.collect_codes(acts, fs.dictionary_encoder(planted_dictionary(), bf16=True))
    np.testing.assert_array_equal(fast.feature, codes.feature)
    np.testing.assert_allclose(fast.value, codes.value, rtol=1e-2)


def test_bad_inputs_are_clear_errors(planted):
    tokens, _, codes = planted
    with pytest.raises(ConfigError, match="non-empty"):
        fs.collect_codes(torch.zeros(0, 4), None)
    with pytest.raises(ConfigError, match="hist_bins"):
        fs.histograms(codes, fs.basic_stats(codes).max_activation, 0)
    with pytest.raises(ConfigError, match="context_size"):
        fs.build_examples(codes, np.array([0]), ["top"], tokens.reshape(-1), 2)
