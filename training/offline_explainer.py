"""The offline explainer, vectorised over many codes at once.

For each code it lists the tokens carrying most of the activation mass in its examples, each
with a 0–9 level (its mean activation relative to the strongest token's), either keyed by the
token that fires or by the token just before it. The mode is chosen by two-fold cross-
validation over the examples (alternate examples explain / predict), so a list of one-off
tokens that only fits its own examples loses to a rule that generalises. Ties in mass are
broken by token text, so one code explained alone gives the same text as in a batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

MAX_LEVEL = 9


@dataclass(frozen=True)
class ExampleBatch:
    """Examples of many codes: windows of token ids with per-token activations.

    Examples are grouped by code (`group` ascending) in the order the explainer sees them.
    """

    group: np.ndarray        # int64 [E]
    offsets: np.ndarray      # int64 [E + 1]
    tokens: np.ndarray       # int64 [W]
    activations: np.ndarray  # float64 [W]
    vocab: list[str]         # token id -> text


@dataclass(frozen=True)
class _Tables:
    keys: np.ndarray    # sorted (part_group * vocab + token) of listed tokens
    levels: np.ndarray  # their levels 1..9


def _tables(part_group: np.ndarray, key_tok: np.ndarray, acts: np.ndarray, n_vocab: int,
            rank: np.ndarray, max_tokens: int, frac: float) -> _Tables:
    """Listed tokens and levels of every (code, part) group from its window tokens."""
    keys, inverse = np.unique(part_group * n_vocab + key_tok, return_inverse=True)
    mass = np.bincount(inverse, weights=acts, minlength=len(keys))
    mean = mass / np.bincount(inverse, minlength=len(keys))
    grp, tok = keys // n_vocab, keys % n_vocab
    starts = np.flatnonzero(np.r_[True, grp[1:] != grp[:-1]])
    top = np.maximum.reduceat(mean, starts) if len(keys) else np.zeros(0)
    total = np.add.reduceat(mass, starts) if len(keys) else np.zeros(0)
    seg = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(keys)]))
    order = np.lexsort((rank[tok], -mass, grp))
    m = mass[order]
    cum = np.cumsum(m)
    seg_o = seg[order]
    before = cum - m - np.r_[0.0, cum][starts[seg_o]]
    position = np.arange(len(order)) - starts[seg_o]
    with np.errstate(divide="ignore", invalid="ignore"):
        level = np.round(MAX_LEVEL * mean[order] / top[seg_o])
    take = (m > 0) & (before < frac * total[seg_o]) & (position < max_tokens) & (level > 0)
    chosen = order[take]
    sort = np.argsort(keys[chosen])
    return _Tables(keys[chosen][sort], level[take][sort].astype(np.int64))


def _lookup(tables: _Tables, query: np.ndarray) -> np.ndarray:
    pos = np.minimum(np.searchsorted(tables.keys, query), max(len(tables.keys) - 1, 0))
    hit = (tables.keys[pos] == query) if len(tables.keys) else np.zeros(len(query), bool)
    return np.where(hit, tables.levels[pos] if len(tables.keys) else 0, 0).astype(np.float64)


def _scores(group: np.ndarray, true: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """simulation_score per group: NaN if true is constant, 0 if pred is, else Pearson."""
    out = np.full(n, np.nan)
    if len(group) == 0:
        return out
    order = np.argsort(group, kind="stable")
    g, t, p = group[order], true[order], pred[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    ids = g[starts]
    t_ptp = np.maximum.reduceat(t, starts) - np.minimum.reduceat(t, starts)
    p_ptp = np.maximum.reduceat(p, starts) - np.minimum.reduceat(p, starts)
    cnt = np.diff(np.r_[starts, len(g)])
    sums = {name: np.add.reduceat(v, starts) for name, v in
            (("t", t), ("p", p), ("tt", t * t), ("pp", p * p), ("tp", t * p))}
    cov = sums["tp"] - sums["t"] * sums["p"] / cnt
    var_t = np.maximum(sums["tt"] - sums["t"] ** 2 / cnt, 0.0)
    var_p = np.maximum(sums["pp"] - sums["p"] ** 2 / cnt, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.clip(cov / np.sqrt(var_t * var_p), -1.0, 1.0)
    out[ids] = np.where(t_ptp == 0, np.nan, np.where(p_ptp == 0, 0.0, corr))
    return out


def _mode(batch: ExampleBatch, n: int, previous: bool, rank: np.ndarray, max_tokens: int,
          frac: float) -> tuple[_Tables, np.ndarray]:
    """(tables of every code from all its examples, cross-validated fit per code)."""
    n_vocab, lengths = len(batch.vocab), np.diff(batch.offsets)
    owner = np.repeat(np.arange(len(batch.group)), lengths)
    first = np.r_[np.flatnonzero(np.r_[True, batch.group[1:] != batch.group[:-1]])]
    rank_in_group = np.arange(len(batch.group)) - np.repeat(first, np.diff(np.r_[first,
                                                                               len(batch.group)]))
    fold = (rank_in_group % 2)[owner]
    group_w = batch.group[owner]
    at_start = (np.arange(len(owner)) - batch.offsets[owner]) == 0
    key_tok = np.r_[-1, batch.tokens[:-1]] if previous else batch.tokens
    usable = ~at_start if previous else np.ones(len(owner), bool)
    key_tok = np.where(usable, key_tok, 0)
    parts = [(usable & (fold == p), p) for p in (0, 1)] + [(usable, 2)]
    idx = np.concatenate([np.flatnonzero(mask) for mask, _ in parts])
    part = np.concatenate([np.full(mask.sum(), p) for mask, p in parts])
    tables = _tables(group_w[idx] * 3 + part, key_tok[idx], batch.activations[idx], n_vocab,
                     rank, max_tokens, frac)
    n_examples = np.bincount(batch.group, minlength=n)
    fits = []
    for train in (0, 1):
        test = fold == 1 - train
        pred = np.where(usable[test], _lookup(tables, (group_w[test] * 3 + train) * n_vocab
                                                    + key_tok[test]), 0.0)
        fits.append(_scores(group_w[test], batch.activations[test], pred, n))
    folds = np.where(n_examples[None] >= 2, np.array(fits), np.nan)
    counted = np.isfinite(folds).sum(0)
    with np.errstate(invalid="ignore"):
        inner = np.where(counted > 0, np.nansum(folds, 0) / counted, np.nan)
    pred_all = np.where(usable, _lookup(tables, (group_w * 3 + 2) * n_vocab + key_tok), 0.0)
    in_sample = np.nan_to_num(_scores(group_w, batch.activations, pred_all, n), nan=-1.0)
    return tables, np.where(np.isnan(inner), in_sample, inner)


def explain_batch(batch: ExampleBatch, n: int, *, max_tokens: int = 8, mass: float = 0.8
                  ) -> list[str]:
    """One explanation per code 0..n-1 ('' for codes without examples or activation)."""
    rank = np.empty(len(batch.vocab), dtype=np.int64)
    rank[np.argsort(np.array(batch.vocab, dtype=object), kind="stable")] = \
        np.arange(len(batch.vocab))
    modes = [_mode(batch, n, prev, rank, max_tokens, mass) for prev in (False, True)]
    labels = [""] * n
    n_vocab = len(batch.vocab)
    listed = [_whole_tables(tables, n_vocab, n) for tables, _ in modes]
    for prev in (0, 1):
        has, other_has = listed[prev][0], listed[1 - prev][0]
        fit, other_fit = modes[prev][1], modes[1 - prev][1]
        wins = has & (~other_has | ((fit > other_fit) if prev else (fit >= other_fit)))
        _, bounds, tok, lvl = listed[prev]
        for c in np.flatnonzero(wins):
            items = sorted(zip(lvl[bounds[c]: bounds[c + 1]].tolist(),
                               tok[bounds[c]: bounds[c + 1]].tolist(), strict=True),
                           key=lambda it: (-it[0], batch.vocab[it[1]]))
            body = ", ".join(f"{json.dumps(batch.vocab[t], ensure_ascii=False)} {v}"
                             for v, t in items)
            labels[c] = f"{'after' if prev else 'tokens'}: {body}"
    return labels


def _whole_tables(tables: _Tables, n_vocab: int, n: int):
    """(code has a table, offsets per code, tokens, levels) of the all-examples tables."""
    listed = tables.keys // n_vocab
    keep = listed % 3 == 2
    code, tok, lvl = listed[keep] // 3, tables.keys[keep] % n_vocab, tables.levels[keep]
    has = np.zeros(n, bool)
    has[code] = True
    return has, np.searchsorted(code, np.arange(n + 1)), tok, lvl
