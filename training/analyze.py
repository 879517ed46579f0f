"""Step 8, analyze: per-feature and per-neuron statistics, labels and interpretability scores.

`analyze_bundle` writes a bundle's `features.parquet` and `neurons.parquet` (the same columns
for the model's neurons at the bundle's hook point, so the two can be compared).
`analyze_run` (implemented in `run_analysis`) adds the whole-run results: universality
against a second model, feature splitting across dictionary sizes, `report/analysis.json`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from featurewatch.config import check_fields
from featurewatch.errors import ConfigError
from featurewatch.training import feature_stats as fs
from featurewatch.training.feature_table import CodeTable, build_table
from featurewatch.training.hooks import forward_to_hook
from featurewatch.training.interpret import Explainer, OfflineExplainer, Simulator, score_codes
from featurewatch.training.logit_effects import logit_effects
from featurewatch.training.offline_explainer import ExampleBatch, explain_batch

NEURONS_FILE = "neurons.parquet"


@dataclass(frozen=True)
class AnalyzeConfig:
    """How much to analyse, how examples are drawn, how codes are labelled and scored."""

    n_tokens: int = 65_536
    """Held-out tokens analysed (whole contexts, chosen at random)."""
    batch_size: int = 64
    """Contexts per model forward pass."""
    chunk: int = 4096
    """Tokens per encoder batch."""
    bf16: bool = True
    """bf16 encoder matmuls (AMX on CPU); activations then carry ~3 significant digits."""
    top_k: int = 16
    """Top-activating examples kept per feature."""
    n_intervals: int = 4
    """Activation intervals over (0, max] to sample examples from."""
    per_interval: int = 3
    """Examples drawn from each interval."""
    window: int = 5
    """Tokens either side of an example's centre."""
    hist_bins: int = 24
    """Bins of each feature's activation histogram."""
    logit_k: int = 10
    """Top positive / negative tokens of the logit effects."""
    n_scored_features: int = 200
    """Random live features whose labels are scored (0 = none)."""
    n_scored_neurons: int = 200
    """Random live neurons scored the same way."""
    n_random_examples: int = 10
    """Random windows added to every held-out set (where codes are mostly silent)."""
    explainer: Literal["offline", "openai"] = "offline"
    """offline (no network) or an OpenAI-compatible chat endpoint for the scored codes."""
    llm_url: str = ""
    """Chat API base URL, e.g. http://localhost:8000/v1 (explainer = openai)."""
    llm_model: str = ""
    """Chat model name (explainer = openai)."""
    llm_cache_dir: str = ""
    """Directory caching chat replies ('' = $XDG_CACHE_HOME or ~/.cache, /featurewatch/llm).
    The API key is never configured here (it would land in logs): FEATUREWATCH_LLM_API_KEY or
    OPENAI_API_KEY from the environment."""
    llm_requests_per_second: float = 2.0
    """Client-side rate limit for the chat endpoint."""
    llm_max_retries: int = 5
    """Retries on 429 / 5xx before a request fails."""
    universality: bool = True
    """Train a second model (seed + 1) and a dictionary on it; compare features and neurons."""
    min_fires: int = 10
    """Codes firing on fewer analysed tokens are not scored and are left out of the
    universality medians (too few examples to judge)."""
    split_threshold: float = 0.4
    """Activation cosine similarity that links features of dictionaries of different sizes."""
    split_children: int = 8
    """Most linked features listed per feature."""
    threads: int = 0
    """torch threads (0 = every core)."""
    seed: int = 0
    """Seed for choosing contexts, interval examples and the scored codes."""

    def __post_init__(self) -> None:
        check_fields(self, "analyze", positive=("n_tokens", "batch_size", "chunk", "top_k",
                                                "n_intervals", "hist_bins", "logit_k"),
                     non_negative=("per_interval", "window", "n_scored_features",
                                   "n_scored_neurons", "n_random_examples", "min_fires",
                                   "split_children", "llm_max_retries"))
        if not 0 < self.split_threshold < 1:
            raise ConfigError(f"analyze.split_threshold={self.split_threshold} must be in (0, 1)")
        if self.explainer == "openai" and not (self.llm_url and self.llm_model):
            raise ConfigError("analyze.explainer='openai' needs analyze.llm_url and "
                              "analyze.llm_model")


def analysis_tokens(tokens: np.ndarray, n_tokens: int, seed: int) -> np.ndarray:
    """Whole contexts chosen at random (kept in file order) totalling at most `n_tokens`."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise ConfigError(f"analysis tokens must be a non-empty [n_contexts, context_size] "
                          f"array, got shape {list(tokens.shape)}")
    n_ctx = max(1, min(len(tokens), n_tokens // tokens.shape[1]))
    rows = np.sort(np.random.default_rng(seed).choice(len(tokens), n_ctx, replace=False))
    return np.ascontiguousarray(tokens[rows], dtype=np.int64)


@torch.no_grad()
def harvest_activations(model, hook_point: str, tokens: np.ndarray, batch_size: int, *,
                        progress: bool = False) -> torch.Tensor:
    """Hook-point activations of every token, [n_contexts * context_size, d_in] float32."""
    out = []
    for start in tqdm(range(0, len(tokens), batch_size), desc="activations", leave=False,
                      disable=not progress):
        batch = torch.from_numpy(tokens[start: start + batch_size])
        acts = forward_to_hook(model, hook_point, batch)
        out.append(acts.reshape(-1, acts.shape[-1]).float())
    return torch.cat(out)


def vocab_strings(tokenizer, vocab_size: int) -> list[str]:
    """Each token id's text (byte-level pieces of a character show as '�')."""
    return [tokenizer.decode([i]) for i in range(vocab_size)]


def llm_cache_dir(cfg: AnalyzeConfig) -> Path:
    """Where chat replies are cached."""
    if cfg.llm_cache_dir:
        return Path(cfg.llm_cache_dir)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "featurewatch" / "llm"


def make_scorers(cfg: AnalyzeConfig) -> tuple[Explainer, Simulator]:
    """The explainer and simulator the config asks for."""
    if cfg.explainer == "offline":
        from featurewatch.training.interpret import OfflineSimulator

        return OfflineExplainer(), OfflineSimulator()
    from featurewatch.training.interpret_llm import (
        ChatClient,
        ChatConfig,
        OpenAIChatExplainer,
        OpenAIChatSimulator,
    )

    client = ChatClient(ChatConfig(
        url=cfg.llm_url, model=cfg.llm_model, requests_per_second=cfg.llm_requests_per_second,
        max_retries=cfg.llm_max_retries, cache_dir=str(llm_cache_dir(cfg))))
    return OpenAIChatExplainer(client), OpenAIChatSimulator(client)


@dataclass
class Analysed:
    """A code table plus what the run-level analysis reuses."""

    table: pl.DataFrame
    codes: fs.SparseCodes
    scores: dict[int, float]


def _examples(codes: fs.SparseCodes, tokens: np.ndarray, max_act: np.ndarray,
              cfg: AnalyzeConfig, rng: np.random.Generator) -> tuple[fs.ExampleSet, fs.ExampleSet]:
    top = fs.top_positions(codes, cfg.top_k)
    top_set = fs.build_examples(codes, top, ["top"] * len(top), tokens, cfg.window)
    pos, interval = fs.interval_positions(codes, max_act, cfg.n_intervals, cfg.per_interval,
                                          rng, exclude=top)
    labels = fs.interval_labels(max_act, codes.feature[pos], interval, cfg.n_intervals)
    return top_set, fs.build_examples(codes, pos, labels, tokens, cfg.window)


def example_batch(top: fs.ExampleSet, intervals: fs.ExampleSet, vocab: list[str]
                  ) -> ExampleBatch:
    """Top then interval examples of every code, grouped by code, as one ExampleBatch."""
    lengths = np.concatenate([np.diff(top.offsets), np.diff(intervals.offsets)])
    starts = np.concatenate([top.offsets[:-1], intervals.offsets[:-1] + len(top.tokens)])
    feature = np.concatenate([top.feature, intervals.feature]).astype(np.int64)
    order = np.argsort(feature, kind="stable")  # stable: a code's top examples come first
    lengths, starts = lengths[order], starts[order]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    gather = np.repeat(starts, lengths) + (np.arange(offsets[-1]) - np.repeat(offsets[:-1],
                                                                             lengths))
    return ExampleBatch(feature[order], offsets,
                        np.concatenate([top.tokens, intervals.tokens])[gather],
                        np.concatenate([top.activations, intervals.activations])[gather]
                        .astype(np.float64), vocab)


def label_codes(top: fs.ExampleSet, intervals: fs.ExampleSet, codes: fs.SparseCodes,
                tokens: np.ndarray, vocab: list[str], n_scored: int, cfg: AnalyzeConfig,
                scorers: tuple[Explainer, Simulator], rng: np.random.Generator,
                ) -> tuple[list[str], np.ndarray]:
    """Labels of every live code (offline explainer, all codes at once) and scores of
    `n_scored` random codes among those firing at least `min_fires` times.

    A scored code's label is the one written from its explaining half, so the score shown
    belongs to the label shown.
    """
    labels = explain_batch(example_batch(top, intervals, vocab), codes.d)
    scores = np.full(codes.d, math.nan)
    # Too few firings leave nothing to hold out: such codes are labelled but not scored.
    enough = (codes.counts() >= cfg.min_fires) & (np.bincount(top.feature, minlength=codes.d) >= 2)
    candidates = np.flatnonzero(enough)
    chosen = np.sort(rng.choice(candidates, min(n_scored, len(candidates)), replace=False))
    random = fs.random_examples(codes, chosen, tokens, vocab, cfg.n_random_examples,
                                cfg.window, rng)
    items = [(top.examples(f, vocab), intervals.examples(f, vocab), random[int(f)])
             for f in chosen]
    for f, scored in zip(chosen, score_codes(*scorers, items), strict=True):
        labels[f], scores[f] = scored.label, scored.score
    return labels, scores


def analyze_codes(codes: fs.SparseCodes, directions: torch.Tensor, *, model, hook_point: str,
                  tokens: np.ndarray, vocab: list[str], cfg: AnalyzeConfig, n_scored: int,
                  scorers: tuple[Explainer, Simulator], norm_scale: float = 1.0) -> Analysed:
    """Statistics, examples, logit effects, labels and scores of one set of codes."""
    rng = np.random.default_rng(cfg.seed + 1)
    stats = fs.basic_stats(codes)
    edges, counts = fs.histograms(codes, stats.max_activation, cfg.hist_bins)
    top, intervals = _examples(codes, tokens, stats.max_activation, cfg, rng)
    logits = logit_effects(model, hook_point, directions, k=cfg.logit_k, norm_scale=norm_scale)
    labels, scores = label_codes(top, intervals, codes, tokens, vocab, n_scored, cfg, scorers,
                                 rng)
    table = build_table(CodeTable(stats, edges, counts, top, intervals, logits, labels, scores),
                        vocab)
    scored = {int(f): float(scores[f]) for f in np.flatnonzero(~np.isnan(scores))}
    return Analysed(table, codes, scored)


def analyze_bundle(model_dir: str | Path, bundle_dir: str | Path,
                   tokens: np.ndarray | str | Path, cfg: AnalyzeConfig, *,
                   progress: bool = True) -> dict[str, Any]:
    """Write `features.parquet` and `neurons.parquet` into the bundle; returns a summary.

    `tokens` are held-out contexts [n, T] (or a .npy file of them) for the bundle's model.
    """
    from featurewatch.training.bundle_analysis import BundleWork

    work = BundleWork.open(model_dir, tokens, cfg, progress=progress)
    return work.analyze(bundle_dir).summary()


def analyze_run(artifacts_dir: str | Path, cfg: AnalyzeConfig, *, train_cfg: Any = None,
                progress: bool = True) -> dict[str, Any]:
    """Analyse every dictionary of a run and write `report/analysis.json`; returns it."""
    from featurewatch.training.run_analysis import run_analysis

    return run_analysis(artifacts_dir, cfg, train_cfg=train_cfg, progress=progress)
