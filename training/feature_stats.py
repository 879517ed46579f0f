"""Per-feature (and per-neuron) statistics: density, mean and max activation, activation
histograms, and examples (top-activating and sampled across activation intervals) as ±N token
windows with the activation of every token.

Everything is computed from `SparseCodes`: the non-zero activations of d codes (a dictionary's
features, or a layer's neurons) over the analysed tokens, kept sorted by (feature, token). The
dictionaries are sparse (L0 ≈ 10–50 of thousands), so this holds a few million entries, every
statistic is one vectorised numpy pass over them, and any token's activation is a binary search.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from featurewatch.errors import ConfigError

Encoder = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Example:
    """One example: a token window with the activation of every token; `center` is its peak."""

    tokens: list[str]
    activations: list[float]
    center: int = 0


@dataclass
class SparseCodes:
    """Non-zero activations of `d` codes over `n_tokens` tokens, sorted by (feature, token).

    Tokens are flat indices `context * context_size + position` into the analysed token array.
    """

    feature: np.ndarray
    token: np.ndarray
    value: np.ndarray
    n_tokens: int
    d: int
    _keys: np.ndarray | None = field(default=None, repr=False)

    @property
    def keys(self) -> np.ndarray:
        """feature * n_tokens + token: strictly increasing, so lookups are binary searches."""
        if self._keys is None:
            self._keys = self.feature.astype(np.int64) * self.n_tokens + self.token
        return self._keys

    def starts(self) -> np.ndarray:
        """Offsets [d + 1] of each feature's segment."""
        return np.searchsorted(self.feature, np.arange(self.d + 1)).astype(np.int64)

    def counts(self) -> np.ndarray:
        """Tokens on which each feature fires [d]."""
        return np.bincount(self.feature, minlength=self.d).astype(np.int64)

    def lookup(self, feature: np.ndarray, token: np.ndarray) -> np.ndarray:
        """Activation of `feature[i]` on `token[i]` (0 where it does not fire)."""
        query = np.asarray(feature, dtype=np.int64) * self.n_tokens + np.asarray(token)
        pos = np.searchsorted(self.keys, query)
        pos_c = np.minimum(pos, max(len(self.keys) - 1, 0))
        hit = (pos < len(self.keys)) & (self.keys[pos_c] == query) if len(self.keys) else \
            np.zeros(len(query), dtype=bool)
        out = np.zeros(len(query), dtype=np.float32)
        out[hit] = self.value[pos_c[hit]]
        return out


def dictionary_encoder(dictionary, bf16: bool = True) -> Encoder:
    """The dictionary's encoder; with bf16 the weights are cast once and the pre-activations
    stay bf16 (autocast would promote the bias add back to float32, which costs as much as the
    matmul). Values are then exact to bf16's ~3 significant digits."""
    if not bf16:
        return dictionary.encode
    w_enc = dictionary.W_enc.detach().to(torch.bfloat16)
    b_enc = dictionary.b_enc.detach().to(torch.bfloat16)
    b_dec = dictionary.b_dec.detach()

    def encode(x: torch.Tensor) -> torch.Tensor:
        return dictionary.activate(torch.addmm(b_enc, (x.float() - b_dec).to(torch.bfloat16),
                                               w_enc))

    return encode


def collect_codes(acts: torch.Tensor, encode: Encoder | None, *, chunk: int = 4096,
                  progress: bool = False, desc: str = "encode") -> SparseCodes:
    """Encode activations [N, d_in] chunk by chunk and keep the non-zero codes.

    With `encode=None` the codes are the activations themselves (neurons), negative values
    (e.g. GELU's) counting as not firing.
    """
    if acts.ndim != 2 or len(acts) == 0:
        raise ConfigError("activations must be a non-empty [N, d_in] matrix, got "
                          f"{list(acts.shape)}")
    rows, cols, vals, d = [], [], [], acts.shape[1]
    for start in tqdm(range(0, len(acts), chunk), desc=desc, disable=not progress, leave=False):
        x = acts[start: start + chunk]
        with torch.no_grad():
            f = x if encode is None else encode(x)
        d = f.shape[1]
        mask = f > 0
        r, c = mask.nonzero(as_tuple=True)
        rows.append((r + start).numpy())
        cols.append(c.to(torch.int32).numpy())
        vals.append(f[mask].float().numpy())
    feature, token, value = np.concatenate(cols), np.concatenate(rows), np.concatenate(vals)
    # Chunks are row-major, so a stable sort by feature leaves tokens ascending inside each;
    # on 16-bit keys numpy's stable sort is a radix sort (linear).
    keys = feature.astype(np.uint16) if d <= 1 << 16 else feature
    order = np.argsort(keys, kind="stable")
    return SparseCodes(feature[order], token[order].astype(np.int64), value[order], len(acts), d)


@dataclass(frozen=True)
class BasicStats:
    """Density (fraction of tokens that fire), mean activation where firing, max activation."""

    density: np.ndarray
    mean_activation: np.ndarray
    max_activation: np.ndarray


def basic_stats(codes: SparseCodes) -> BasicStats:
    """Density, mean (over firing tokens) and max activation of every code."""
    counts = codes.counts()
    sums = np.bincount(codes.feature, weights=codes.value, minlength=codes.d)
    maxes = np.zeros(codes.d)
    live = counts > 0
    if live.any():
        starts = codes.starts()[:-1][live]
        maxes[live] = np.maximum.reduceat(codes.value.astype(np.float64), starts)
    mean = np.divide(sums, counts, out=np.zeros(codes.d), where=live)
    return BasicStats(counts / codes.n_tokens, mean, maxes)


def histograms(codes: SparseCodes, max_activation: np.ndarray, bins: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of each code's non-zero activations on `bins` equal bins over [0, max].

    Returns (edges [d, bins + 1], counts [d, bins]); rows of dead codes are all zero.
    """
    if bins < 1:
        raise ConfigError(f"hist_bins={bins} must be ≥ 1")
    top = max_activation[codes.feature]
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.floor(codes.value / top * bins)
    b = np.clip(np.nan_to_num(b), 0, bins - 1).astype(np.int64)
    counts = np.bincount(codes.feature.astype(np.int64) * bins + b, minlength=codes.d * bins)
    edges = max_activation[:, None] * np.linspace(0.0, 1.0, bins + 1)[None, :]
    return edges, counts.reshape(codes.d, bins)


def top_positions(codes: SparseCodes, k: int) -> np.ndarray:
    """Indices into `codes` of each feature's `k` highest activations, by feature then rank."""
    starts, out = codes.starts(), []
    for f in np.flatnonzero(np.diff(starts)):
        lo, hi = starts[f], starts[f + 1]
        seg = codes.value[lo:hi]
        # argpartition keeps this linear in the segment: neurons fire on most tokens.
        idx = np.argpartition(-seg, k - 1)[:k] if len(seg) > k else np.arange(len(seg))
        out.append(lo + idx[np.argsort(-seg[idx], kind="stable")])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def interval_positions(codes: SparseCodes, max_activation: np.ndarray, n_intervals: int,
                       per_interval: int, rng: np.random.Generator,
                       exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Random examples from each of `n_intervals` equal activation intervals over (0, max].

    Returns (indices into `codes`, interval number), by feature then interval; entries in
    `exclude` (e.g. the top examples) are never drawn, so the two sets do not repeat.
    """
    top = max_activation[codes.feature]
    with np.errstate(divide="ignore", invalid="ignore"):
        interval = np.floor(codes.value / top * n_intervals)
    interval = np.clip(np.nan_to_num(interval), 0, n_intervals - 1).astype(np.int64)
    if exclude is not None and len(exclude):
        interval[exclude] = -1
    starts, picks, numbers = codes.starts(), [], []
    for f in np.flatnonzero(np.diff(starts)):
        lo = starts[f]
        seg = interval[lo: starts[f + 1]]
        for b in range(n_intervals):
            members = np.flatnonzero(seg == b)
            if len(members) > per_interval:
                members = np.sort(rng.choice(members, per_interval, replace=False))
            picks.append(lo + members)
            numbers.append(np.full(len(members), b))
    if not picks:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(picks).astype(np.int64), np.concatenate(numbers).astype(np.int64)


@dataclass
class ExampleSet:
    """Examples of many features, grouped by feature: windows of token ids and activations."""

    feature: np.ndarray        # int32 [E], ascending
    value: np.ndarray          # float32 [E], the activation at the centre token
    interval: list[str]        # [E] "top" or "lo-hi"
    center: np.ndarray         # int32 [E], position of the centre inside its window
    offsets: np.ndarray        # int64 [E + 1], window e is tokens[offsets[e]:offsets[e+1]]
    tokens: np.ndarray         # int64 [W], token ids
    activations: np.ndarray    # float32 [W]

    def feature_offsets(self, d: int) -> np.ndarray:
        """Offsets [d + 1] of each feature's examples."""
        return np.searchsorted(self.feature, np.arange(d + 1))

    def examples(self, feature: int, vocab: list[str]) -> list[Example]:
        """The examples of one feature as `Example` objects with token strings."""
        lo, hi = np.searchsorted(self.feature, [feature, feature + 1])
        out = []
        for e in range(lo, hi):
            a, b = self.offsets[e], self.offsets[e + 1]
            out.append(Example([vocab[t] for t in self.tokens[a:b]],
                               self.activations[a:b].astype(float).tolist(), int(self.center[e])))
        return out


def windows(centers: np.ndarray, context_size: int, n_tokens: int, window: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """±window token windows around flat token indices, clipped to their context.

    Returns (offsets [E + 1], flat token indices [W], centre position inside each window [E]).
    """
    pos = centers % context_size
    lo = centers - np.minimum(pos, window)
    hi = np.minimum(centers - pos + context_size, centers + window + 1)
    hi = np.minimum(hi, n_tokens)
    lengths = hi - lo
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.repeat(lo, lengths) + (np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths))
    return offsets, flat.astype(np.int64), (centers - lo).astype(np.int32)


def build_examples(codes: SparseCodes, positions: np.ndarray, labels: list[str],
                   tokens: np.ndarray, window: int) -> ExampleSet:
    """The ExampleSet of the code entries at `positions` (features ascending) with their windows."""
    if tokens.ndim != 2:
        raise ConfigError(f"tokens must be [n_contexts, context_size], got shape {tokens.shape}")
    flat_tokens = tokens.reshape(-1)
    centers = codes.token[positions]
    offsets, flat, center = windows(centers, tokens.shape[1], codes.n_tokens, window)
    feature = codes.feature[positions]
    lengths = np.diff(offsets)
    acts = codes.lookup(np.repeat(feature, lengths), flat)
    return ExampleSet(feature, codes.value[positions], labels, center, offsets,
                      flat_tokens[flat].astype(np.int64), acts)


def interval_labels(max_activation: np.ndarray, feature: np.ndarray, interval: np.ndarray,
                    n_intervals: int) -> list[str]:
    """'lo-hi' activation range of each interval example."""
    step = max_activation[feature] / n_intervals
    return [f"{lo:.3g}-{hi:.3g}" for lo, hi in zip(interval * step, (interval + 1) * step,
                                                 strict=True)]


def random_examples(codes: SparseCodes, features: np.ndarray, tokens: np.ndarray,
                    vocab: list[str], n: int, window: int, rng: np.random.Generator
                    ) -> dict[int, list[Example]]:
    """The same `n` random token windows for every feature in `features`, with its activations.

    Random windows show where a feature is silent, which a good explanation must predict too.
    """
    if n <= 0 or len(features) == 0:
        return {int(f): [] for f in features}
    centers = rng.choice(codes.n_tokens, size=min(n, codes.n_tokens), replace=False)
    offsets, flat, center = windows(np.sort(centers), tokens.shape[1], codes.n_tokens, window)
    strings = [vocab[t] for t in tokens.reshape(-1)[flat]]
    out: dict[int, list[Example]] = {}
    for f in features:
        acts = codes.lookup(np.full(len(flat), f), flat)
        out[int(f)] = [Example(strings[a:b], acts[a:b].astype(float).tolist(), int(c))
                       for a, b, c in zip(offsets[:-1], offsets[1:], center, strict=True)]
    return out
