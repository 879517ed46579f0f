"""Sampling: greedy, top-k / top-p filtering, seeded draws with the right distribution."""

from __future__ import annotations

import math

import torch

from featurewatch.services.inference.domain import SamplingParams
from featurewatch.services.inference.sampling import (
    draw,
    filter_logits,
    make_generator,
    sample_token,
)

LOGITS = torch.log(torch.tensor([0.05, 0.5, 0.0001, 0.3, 0.1499]))


def test_greedy_picks_argmax_and_reports_model_logprob():
    token, logprob = sample_token(LOGITS, SamplingParams(temperature=0), make_generator(0))
    assert token == 1
    assert math.isclose(logprob, math.log(0.5), rel_tol=1e-5)


def test_top_k_keeps_k_most_likely():
    kept = torch.isfinite(filter_logits(LOGITS, SamplingParams(top_k=2)))
    assert kept.tolist() == [False, True, False, True, False]


def test_top_p_keeps_smallest_set_reaching_p():
    # 0.5 + 0.3 = 0.8 < 0.85, so the 0.1499 token is needed too.
    kept = torch.isfinite(filter_logits(LOGITS, SamplingParams(top_p=0.85)))
    assert kept.tolist() == [False, True, False, True, True]
    only_first = torch.isfinite(filter_logits(LOGITS, SamplingParams(top_p=0.1)))
    assert only_first.tolist() == [False, True, False, False, False]


def test_same_seed_same_tokens_and_filtered_tokens_never_drawn():
    params = SamplingParams(top_k=2, seed=3)
    a = [sample_token(LOGITS, params, g)[0] for g in [make_generator(3)] for _ in range(50)]
    g = make_generator(3)
    b = [sample_token(LOGITS, params, g)[0] for _ in range(50)]
    assert a == b
    assert set(a) <= {1, 3}


def test_draw_follows_the_distribution():
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3], dtype=torch.float64)
    g = make_generator(0)
    counts = torch.bincount(torch.tensor([draw(probs, g) for _ in range(20000)]), minlength=4)
    freq = counts.double() / counts.sum()
    assert counts[1] == 0
    assert torch.allclose(freq, probs, atol=0.015)


def test_temperature_sharpens():
    g1, g2 = make_generator(1), make_generator(1)
    cold = [sample_token(LOGITS, SamplingParams(temperature=0.05), g1)[0] for _ in range(200)]
    warm = [sample_token(LOGITS, SamplingParams(temperature=1.0), g2)[0] for _ in range(200)]
    assert cold.count(1) > 190
    assert warm.count(1) < 150


def test_tiny_temperatures_approach_greedy_instead_of_overflowing():
    logits = torch.linspace(-3.0, 3.0, 400).roll(17)  # argmax away from the ends
    greedy = int(torch.argmax(logits))
    for temperature in (1e-3, 1e-20, 1e-38, 1e-45):
        g = make_generator(0)
        for params in (SamplingParams(temperature=temperature),
                       SamplingParams(temperature=temperature, top_p=0.9, top_k=5)):
            assert [sample_token(logits, params, g)[0] for _ in range(5)] == [greedy] * 5
