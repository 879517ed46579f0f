"""Labels and interpretability scores: explain from some examples, simulate the rest.

An explainer writes a short description of a feature (or neuron) from examples of it; a
simulator predicts per-token activations (quantised 0–9) from the description alone on
held-out examples; the score is the Pearson correlation of the simulation with the true
activations, computed the same way for features and neurons (the paper's autointerpretability).

The offline pair needs no network. Its explanation names the tokens that drive the code with a
0–9 strength each — either the token that fires (`tokens: "def" 9, " class" 5`) or the token
just before it (`after: "(" 9`), whichever predicts the explaining examples better — and its
simulator reads only that text. The LLM pair lives in `interpret_llm`.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from featurewatch.errors import ConfigError
from featurewatch.training.feature_stats import Example
from featurewatch.training.offline_explainer import MAX_LEVEL, ExampleBatch, explain_batch

log = logging.getLogger(__name__)
QUOTED = re.compile(r'("(?:[^"\\]|\\.)*")\s+(\d)')


class UnusableSimulation(Exception):
    """A simulator's answer for one code cannot be used (e.g. an LLM reply with the wrong
    number of levels): that code is left unscored instead of failing the whole analysis."""


class Explainer(Protocol):
    def explain(self, examples: Sequence[Example]) -> str: ...


class Simulator(Protocol):
    def simulate(self, explanation: str, windows: Sequence[Sequence[str]]) -> list[list[float]]: ...


def pearson(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant (the correlation is undefined)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"pearson: lengths differ ({x.size} vs {y.size})")
    if x.size < 2:
        return math.nan
    x, y = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(x @ x) * float(y @ y))
    if denom <= 1e-12 * max(1.0, float(np.abs(x).max()) * float(np.abs(y).max())):
        return math.nan
    return float(np.clip((x @ y) / denom, -1.0, 1.0))


def simulation_score(true: Sequence[Sequence[float]], predicted: Sequence[Sequence[float]]
                     ) -> float:
    """Correlation of simulated with true activations over all held-out tokens at once.

    A constant simulation (the explanation predicts nothing) scores 0; held-out examples on which
    the code never varies cannot score anything and give NaN (left out of medians).
    """
    if len(true) != len(predicted):
        raise ValueError(f"{len(predicted)} simulated windows for {len(true)} examples")
    t, p = [], []
    for i, (tw, pw) in enumerate(zip(true, predicted, strict=True)):
        if len(tw) != len(pw):
            raise ValueError(f"example {i}: {len(pw)} simulated activations for {len(tw)} tokens")
        t.extend(tw)
        p.extend(pw)
    if not t:
        raise ConfigError("no held-out example tokens to score the explanation on")
    t_arr, p_arr = np.asarray(t, dtype=np.float64), np.asarray(p, dtype=np.float64)
    if np.ptp(t_arr) == 0:
        return math.nan
    if np.ptp(p_arr) == 0:
        return 0.0
    return pearson(t_arr, p_arr)


def quantise(values: Sequence[float], top: float) -> list[int]:
    """Activations as integers 0..9 relative to `top` (the code's max activation)."""
    if top <= 0:
        return [0 for _ in values]
    return [int(min(MAX_LEVEL, max(0, round(MAX_LEVEL * v / top)))) for v in values]


def _predict(table: dict[str, int], tokens: Sequence[str], previous: bool) -> list[float]:
    if previous:
        return [0.0] + [float(table.get(tok, 0)) for tok in tokens[:-1]]
    return [float(table.get(tok, 0)) for tok in tokens]


def format_explanation(table: dict[str, int], previous: bool) -> str:
    """The explanation text the simulator reads, strongest token first."""
    items = sorted(table.items(), key=lambda kv: (-kv[1], kv[0]))
    body = ", ".join(f"{json.dumps(tok, ensure_ascii=False)} {level}" for tok, level in items)
    return f"{'after' if previous else 'tokens'}: {body}"


def parse_explanation(text: str) -> tuple[dict[str, int], bool]:
    """(token → level, previous-token mode) from an offline explanation; ({}, False) if none."""
    previous = text.lstrip().startswith("after:")
    table = {}
    for quoted, level in QUOTED.findall(text):
        try:
            table[json.loads(quoted)] = int(level)
        except json.JSONDecodeError:
            continue
    return table, previous


def example_batch(codes: Sequence[Sequence[Example]]) -> ExampleBatch:
    """Several codes' examples as one ExampleBatch (vocabulary: their tokens, sorted)."""
    flat = [(c, ex) for c, examples in enumerate(codes) for ex in examples]
    vocab = sorted({tok for _, ex in flat for tok in ex.tokens})
    ids = {tok: i for i, tok in enumerate(vocab)}
    lengths = [len(ex.tokens) for _, ex in flat]
    return ExampleBatch(
        group=np.array([c for c, _ in flat], dtype=np.int64),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        tokens=np.array([ids[t] for _, ex in flat for t in ex.tokens], dtype=np.int64),
        activations=np.array([a for _, ex in flat for a in ex.activations], dtype=np.float64),
        vocab=vocab)


@dataclass(frozen=True)
class OfflineExplainer:
    """Names the tokens (or preceding tokens) that carry most of the activation mass."""

    max_tokens: int = 8
    """Most tokens an explanation considers."""
    mass: float = 0.8
    """Stop listing tokens once they carry this fraction of the total activation."""

    def explain(self, examples: Sequence[Example]) -> str:
        if not examples:
            raise ConfigError("cannot explain a code from an empty example set")
        return self.explain_many([examples])[0]

    def explain_many(self, codes: Sequence[Sequence[Example]]) -> list[str]:
        """explain() of each example set, computed in one vectorised pass."""
        if any(not examples for examples in codes):
            raise ConfigError("cannot explain a code from an empty example set")
        return explain_batch(example_batch(codes), len(codes), max_tokens=self.max_tokens,
                             mass=self.mass)


@dataclass(frozen=True)
class OfflineSimulator:
    """Predicts each token's level from the explanation's token list alone."""

    def simulate(self, explanation: str, windows: Sequence[Sequence[str]]) -> list[list[float]]:
        table, previous = parse_explanation(explanation)
        return [_predict(table, list(tokens), previous) for tokens in windows]


@dataclass(frozen=True)
class Scored:
    """A code's label and its simulation score (NaN when it could not be scored)."""

    label: str
    score: float


def split_examples(top: Sequence[Example], intervals: Sequence[Example]
                   ) -> tuple[list[Example], list[Example]]:
    """(explain, held-out): alternate top examples and alternate interval examples."""
    explain = list(top[0::2]) + list(intervals[0::2])
    held_out = list(top[1::2]) + list(intervals[1::2])
    return explain, held_out


def score_codes(explainer: Explainer, simulator: Simulator,
                codes: Sequence[tuple[Sequence[Example], Sequence[Example], Sequence[Example]]]
                ) -> list[Scored]:
    """score_code for many codes, given as (top, interval, random) example lists.

    The offline explainer writes all the explanations in one vectorised pass.
    """
    splits = [split_examples(top, intervals) for top, intervals, _ in codes]
    if any(not explain for explain, _ in splits):
        raise ConfigError("cannot score a code without examples (it never fired)")
    if isinstance(explainer, OfflineExplainer):
        labels = explainer.explain_many([explain for explain, _ in splits])
    else:
        labels = [explainer.explain(explain) for explain, _ in splits]
    out = []
    for label, (_, held_out), (_, _, random) in zip(labels, splits, codes, strict=True):
        held_out = held_out + list(random)
        if not held_out:
            out.append(Scored(label, math.nan))
            continue
        try:
            predicted = simulator.simulate(label, [ex.tokens for ex in held_out])
        except UnusableSimulation as exc:
            log.warning("code left unscored: %s", exc)
            out.append(Scored(label, math.nan))
            continue
        out.append(Scored(label, simulation_score([ex.activations for ex in held_out],
                                                  predicted)))
    return out


def score_code(explainer: Explainer, simulator: Simulator, top: Sequence[Example],
               intervals: Sequence[Example], random: Sequence[Example]) -> Scored:
    """Explain from half the examples; score on the other half plus random windows."""
    return score_codes(explainer, simulator, [(top, intervals, random)])[0]
