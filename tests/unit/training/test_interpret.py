"""Correlation scoring on constructed cases and the offline explainer/simulator."""

from __future__ import annotations

import math

import numpy as np
import pytest

from featurewatch.errors import ConfigError
from featurewatch.training.feature_stats import Example
from featurewatch.training.interpret import (
    OfflineExplainer,
    OfflineSimulator,
    format_explanation,
    parse_explanation,
    pearson,
    quantise,
    score_code,
    simulation_score,
)


def test_pearson_constructed_cases():
    x = [0.0, 1.0, 2.0, 3.0]
    assert pearson(x, [2 * v + 1 for v in x]) == pytest.approx(1.0)
    assert pearson(x, [-v for v in x]) == pytest.approx(-1.0)
    assert pearson([1, 0, 0, 0], [0, 1, 0, 0]) == pytest.approx(-1 / 3)
    assert math.isnan(pearson(x, [5.0] * 4))
    assert math.isnan(pearson([1.0], [2.0]))
    rng = np.random.default_rng(0)
    a, b = rng.random(50), rng.random(50)
    assert pearson(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1])
    with pytest.raises(ValueError, match="lengths differ"):
        pearson([1, 2], [1, 2, 3])


def test_simulation_score_pools_all_windows():
    true = [[0.0, 3.0, 0.0], [1.0, 0.0]]
    assert simulation_score(true, [[0, 9, 0], [3, 0]]) == pytest.approx(1.0)
    assert simulation_score(true, [[9, 0, 9], [6, 9]]) == pytest.approx(-1.0)
    assert simulation_score(true, [[0, 0, 0], [0, 0]]) == 0.0  # predicts nothing
    assert math.isnan(simulation_score([[0.0, 0.0]], [[1, 0]]))  # nothing to predict
    with pytest.raises(ValueError, match="example 1"):
        simulation_score(true, [[0, 9, 0], [3]])
    with pytest.raises(ConfigError, match="no held-out"):
        simulation_score([], [])


def test_quantise_scales_to_nine():
    assert quantise([0.0, 0.5, 1.0, 2.0], 1.0) == [0, 4, 9, 9]
    assert quantise([1.0], 0.0) == [0]


def test_explanation_round_trips_through_its_text():
    table = {' def': 9, '"quoted"': 5, "\n": 2}
    text = format_explanation(table, previous=True)
    assert text.startswith("after: ")
    assert parse_explanation(text) == (table, True)
    assert parse_explanation("something an LLM wrote") == ({}, False)


def _ex(tokens: str, acts: list[float]) -> Example:
    return Example(tokens.split(), acts, int(np.argmax(acts)))


def test_offline_pair_recovers_a_token_feature():
    examples = [_ex("a b c x d", [0, 0, 0, 4, 0]), _ex("x e f", [3.5, 0, 0]),
                _ex("g y h", [0, 2, 0]), _ex("i j y", [0, 0, 2.1])]
    label = OfflineExplainer().explain(examples)
    table, previous = parse_explanation(label)
    assert not previous and table == {"x": 9, "y": 5}
    sim = OfflineSimulator().simulate(label, [["q", "x", "y", "z"]])
    assert sim == [[0.0, 9.0, 5.0, 0.0]]


def test_offline_pair_prefers_the_previous_token_when_it_explains_better():
    # fires on whatever follows "(": the current token varies, the previous one does not
    examples = [_ex("f ( a )", [0, 0, 3, 0]), _ex("g ( b )", [0, 0, 3, 0]),
                _ex("h ( c )", [0, 0, 3, 0]), _ex("( d", [0, 3])]
    label = OfflineExplainer().explain(examples)
    assert parse_explanation(label) == ({"(": 9}, True)
    assert OfflineSimulator().simulate(label, [["k", "(", "z"]]) == [[0.0, 0.0, 9.0]]


def test_score_code_explains_on_half_and_scores_on_the_rest():
    top = [_ex("a x b", [0, 4, 0]), _ex("x c", [3.9, 0]), _ex("d x", [0, 3.8]),
           _ex("x x", [3.7, 3.6])]
    intervals = [_ex("e x", [0, 2]), _ex("x f", [1.9, 0])]
    random = [_ex("g h i", [0, 0, 0])]
    scored = score_code(OfflineExplainer(), OfflineSimulator(), top, intervals, random)
    assert parse_explanation(scored.label)[0] == {"x": 9}
    true = [v for ex in (top[1], top[3], intervals[1], random[0]) for v in ex.activations]
    pred = [9 if t == "x" else 0 for ex in (top[1], top[3], intervals[1], random[0])
            for t in ex.tokens]
    assert scored.score == pytest.approx(pearson(true, pred))


def test_polysemantic_code_scores_lower_than_monosemantic():
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(30)]

    def examples(drivers: list[str], n: int) -> list[Example]:
        out = []
        for _ in range(n):
            toks = list(rng.choice(vocab, 7))
            toks[3] = str(rng.choice(drivers))
            acts = [3.0 if t in drivers else 0.0 for t in toks]
            out.append(Example(toks, acts, 3))
        return out

    mono = score_code(OfflineExplainer(), OfflineSimulator(), examples(["w1"], 16),
                      examples(["w1"], 8), [])
    poly = score_code(OfflineExplainer(max_tokens=2), OfflineSimulator(),
                      examples([f"w{i}" for i in range(10)], 16),
                      examples([f"w{i}" for i in range(10)], 8), [])
    assert mono.score == pytest.approx(1.0)
    assert poly.score < 0.8


def test_empty_example_sets_are_clear_errors():
    with pytest.raises(ConfigError, match="empty example set"):
        OfflineExplainer().explain([])
    with pytest.raises(ConfigError, match="never fired"):
        score_code(OfflineExplainer(), OfflineSimulator(), [], [], [])


def test_batch_explanations_equal_one_code_at_a_time():
    """The vectorised explainer must not mix codes: each label equals the single-code one."""
    from featurewatch.training.offline_explainer import explain_batch

    rng = np.random.default_rng(3)
    vocab = [f"w{i}" for i in range(12)]
    per_code, groups, tokens, acts, lengths = [], [], [], [], []
    for code in range(40):
        drivers = rng.choice(12, 2, replace=False)
        examples = []
        for _ in range(int(rng.integers(1, 7))):
            toks = rng.integers(0, 12, int(rng.integers(2, 8)))
            act = np.where(np.isin(toks, drivers), rng.uniform(0.5, 3, len(toks)), 0.0)
            act = act if code % 5 else np.roll(act, 1)  # some codes follow the previous token
            examples.append(Example([vocab[t] for t in toks], act.tolist()))
            groups.append(code)
            tokens.extend(toks.tolist())
            acts.extend(act.tolist())
            lengths.append(len(toks))
        per_code.append(OfflineExplainer().explain(examples))
    from featurewatch.training.offline_explainer import ExampleBatch

    batch = ExampleBatch(np.array(groups), np.concatenate([[0], np.cumsum(lengths)]),
                         np.array(tokens), np.array(acts), vocab)
    assert explain_batch(batch, 41) == per_code + [""]
