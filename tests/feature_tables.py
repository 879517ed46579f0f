"""Synthetic feature tables and bundles that follow the analysis output schema exactly.

`features.parquet` / `neurons.parquet` hold one row per feature (or neuron) with the columns and
dtypes of FEATURE_SCHEMA. Tests of the browser, the report and the analysis build small bundles
here, optionally with one "planted" feature whose values the test then looks for.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import polars as pl

EXAMPLE_DTYPE = pl.Struct({
    "tokens": pl.List(pl.String),
    "activations": pl.List(pl.Float64),
    "center": pl.Int32,
    "max_activation": pl.Float64,
    "interval": pl.String,
})

FEATURE_SCHEMA = pl.Schema({
    "feature": pl.UInt32,
    "density": pl.Float64,
    "mean_activation": pl.Float64,
    "max_activation": pl.Float64,
    "label": pl.String,
    "interp_score": pl.Float64,
    "act_hist_edges": pl.List(pl.Float64),
    "act_hist_counts": pl.List(pl.Int64),
    "top_examples": pl.List(EXAMPLE_DTYPE),
    "interval_examples": pl.List(EXAMPLE_DTYPE),
    "logit_pos_tokens": pl.List(pl.String),
    "logit_pos_values": pl.List(pl.Float64),
    "logit_neg_tokens": pl.List(pl.String),
    "logit_neg_values": pl.List(pl.Float64),
})

VOCAB = [" the", " of", " and", " a", " to", " in", " is", " was", " that", " for", "ing", "ed",
         " data", " model", "\n", ".", ",", " (", ")", " code", " value", " time", " feature"]
WORDS = ["alpha", "river", "quiet", "number", "paper", "engine", "garden", "signal", "cloud",
         "market", "window", "letter", "silver", "orbit", "harbor", "pencil", "violet"]


def example(tokens: list[str], activations: list[float], interval: str = "top",
            center: int | None = None) -> dict[str, Any]:
    """One example context; `center` defaults to the token with the largest activation."""
    if center is None:
        center = max(range(len(activations)), key=lambda i: activations[i])
    return {"tokens": list(tokens), "activations": [float(a) for a in activations],
            "center": int(center), "max_activation": float(max(activations)),
            "interval": interval}


def _random_example(rng: random.Random, peak: float, interval: str, window: int = 4) -> dict:
    n = 2 * window + 1
    tokens = [rng.choice(VOCAB) for _ in range(n)]
    acts = [0.0] * n
    acts[window] = peak
    for i in range(n):
        if i != window and rng.random() < 0.3:
            acts[i] = round(peak * rng.random() * 0.5, 4)
    return example(tokens, acts, interval, center=window)


def _histogram(rng: random.Random, max_act: float, bins: int = 12) -> tuple[list, list]:
    edges = [max_act * i / bins for i in range(bins + 1)]
    counts = [int(1000 * math.exp(-3 * i / bins) * (0.5 + rng.random())) for i in range(bins)]
    return edges, counts


def feature_row(feature: int, rng: random.Random, /, **override: Any) -> dict[str, Any]:
    """One random but well-formed row; keyword arguments replace columns."""
    max_act = round(1 + 9 * rng.random(), 4)
    density = 10 ** rng.uniform(-6, -1) if rng.random() > 0.03 else 0.0
    edges, counts = _histogram(rng, max_act)
    intervals = [f"{lo:.1f}-{lo + max_act / 4:.1f}" for lo in (0, max_act / 4, max_act / 2)]
    row = {
        "feature": feature, "density": density, "mean_activation": round(max_act / 3, 4),
        "max_activation": max_act,
        "label": f"{rng.choice(WORDS)} {rng.choice(WORDS)} tokens",
        "interp_score": None if rng.random() < 0.05 else round(rng.uniform(-0.1, 0.9), 4),
        "act_hist_edges": edges, "act_hist_counts": counts,
        "top_examples": [_random_example(rng, max_act * (1 - 0.05 * i), "top") for i in range(3)],
        "interval_examples": [_random_example(rng, max_act * (0.2 + 0.25 * i), intervals[i])
                              for i in range(3)],
        "logit_pos_tokens": rng.sample(VOCAB, 5),
        "logit_pos_values": sorted((round(rng.uniform(0.1, 2), 4) for _ in range(5)), reverse=True),
        "logit_neg_tokens": rng.sample(VOCAB, 5),
        "logit_neg_values": sorted(round(-rng.uniform(0.1, 2), 4) for _ in range(5)),
    }
    row.update(override)
    return row


def feature_rows(n: int, *, seed: int = 0, planted: dict[int, dict] | None = None) -> list[dict]:
    """`n` rows for features 0..n-1; `planted[i]` overrides columns of row i."""
    rng = random.Random(seed)
    planted = planted or {}
    return [feature_row(i, rng, **planted.get(i, {})) for i in range(n)]


def write_feature_table(path: str | Path, rows: list[dict]) -> Path:
    """Write rows as a parquet file with exactly FEATURE_SCHEMA."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows, schema=FEATURE_SCHEMA).write_parquet(path)
    return path


def synthetic_metrics(rows: list[dict], *, l0: float = 12.0, loss_recovered: float = 0.8) -> dict:
    """A metrics.json body consistent with the rows' densities."""
    density = [r["density"] for r in rows]
    return {"mse": 0.01, "fvu": 0.12, "l0": l0, "loss_recovered": loss_recovered,
            "dead": sum(d == 0 for d in density), "ultralow": sum(0 < d < 1e-6 for d in density),
            "dense": sum(d > 0.01 for d in density), "feature_density": density}


def synthetic_history(steps: int = 20, *, seed: int = 0) -> list[dict]:
    """A decreasing training curve in history.json's format."""
    rng = random.Random(seed)
    out = []
    for i in range(steps):
        step = (i + 1) * 50
        mse = 0.05 * math.exp(-i / 6) + 0.01 + 0.001 * rng.random()
        out.append({"step": step, "loss": mse * 1.5, "mse": mse, "l0": 60 * math.exp(-i / 5) + 10,
                    "fvu": mse * 10})
    return out


def write_synthetic_bundle(bundle_dir: str | Path, *, n_features: int = 40, n_neurons: int = 16,
                           seed: int = 0, planted: dict[int, dict] | None = None,
                           neuron_planted: dict[int, dict] | None = None,
                           l0: float = 12.0, loss_recovered: float = 0.8) -> Path:
    """A bundle directory with cfg.json, metrics.json, history.json and both feature tables."""
    bundle = Path(bundle_dir)
    bundle.mkdir(parents=True, exist_ok=True)
    rows = feature_rows(n_features, seed=seed, planted=planted)
    write_feature_table(bundle / "features.parquet", rows)
    write_feature_table(bundle / "neurons.parquet",
                        feature_rows(n_neurons, seed=seed + 1000, planted=neuron_planted))
    cfg = {"architecture": "standard", "d_in": n_neurons, "d_sae": n_features,
           "hook_name": "blocks.0.mlp.hook_post",
           "featurewatch": {"dictionary_id": bundle.name, "model_id": "featurewatch-1l-a",
                            "model_weights_sha256": "0" * 64,
                            "hook_point": "blocks.0.mlp.hook_post"}}
    (bundle / "cfg.json").write_text(json.dumps(cfg, indent=2))
    metrics = synthetic_metrics(rows, l0=l0, loss_recovered=loss_recovered)
    (bundle / "metrics.json").write_text(json.dumps(metrics))
    (bundle / "history.json").write_text(json.dumps(synthetic_history(seed=seed)))
    return bundle


def synthetic_analysis(dictionaries: list[tuple[str, int]], *, seed: int = 0,
                       links: list[dict] | None = None) -> dict:
    """An analysis.json body for `dictionaries` = [(id, d_sae), ...] (smallest first)."""
    rng = random.Random(seed)
    feature_scores = [rng.uniform(0.2, 0.95) for _ in range(200)]
    neuron_scores = [rng.uniform(-0.1, 0.7) for _ in range(100)]
    feature_corr = [rng.uniform(0.4, 1.0) for _ in range(200)]
    neuron_corr = [rng.uniform(0.1, 0.8) for _ in range(100)]
    ids = [d for d, _ in dictionaries]
    if links is None:
        links = [{"from": ids[i], "feature": 0, "to": ids[i + 1],
                  "children": [[j, round(0.9 - 0.1 * j, 3)] for j in range(3)]}
                 for i in range(len(ids) - 1)]
    return {
        "interpretability": {"median_feature_score": _median(feature_scores),
                             "median_neuron_score": _median(neuron_scores),
                             "feature_scores": feature_scores, "neuron_scores": neuron_scores},
        "universality": {"median_feature": _median(feature_corr),
                         "median_neuron": _median(neuron_corr),
                         "feature_best_corr": feature_corr, "neuron_best_corr": neuron_corr},
        "splits": {"dictionaries": ids, "links": links,
                   "example": ({"dictionary": links[0]["from"], "feature": links[0]["feature"]}
                               if links else {})},
        "dictionaries": [{"id": d, "d_sae": n, "l0": 10.0 + i, "loss_recovered": 0.7 + 0.05 * i}
                         for i, (d, n) in enumerate(dictionaries)],
    }


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
