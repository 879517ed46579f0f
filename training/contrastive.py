"""Choosing features to flag: which features separate a positive from a negative example set.

Each example is scored by its per-feature maximum activation over its tokens. For every
feature, every cut between distinct activation values is a candidate threshold; the best cut
by F1 (then precision) gives the feature's threshold, precision and recall. The threshold is
the midpoint between the lowest activation kept and the next one below it, so it can be used
as the monitor's `min_activation` as is. Flags come out as the monitor's flag file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from featurewatch.errors import ConfigError
from featurewatch.training.hooks import forward_to_hook

NAME_LIMIT = 80


@dataclass(frozen=True)
class Candidate:
    """One feature's best separating threshold and how well it separates."""

    feature: int
    threshold: float
    precision: float
    recall: float
    f1: float
    positive_mean: float
    negative_mean: float


def read_examples(path: str | Path) -> list[str]:
    """Examples from a file: JSONL ({"text": ...} or a string per line) or one per line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: example file does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the example file ({exc.strerror})") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        texts = []
        for n, line in enumerate(lines, 1):
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            text = item.get("text") if isinstance(item, dict) else item
            if not isinstance(text, str):
                raise ConfigError(f"{path}:{n}: expected a string or an object with 'text'")
            texts.append(text)
        lines = texts
    if not lines:
        raise ConfigError(f"{path}: no examples (the file is empty)")
    return lines


def _best_cuts(acts: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per column: the best cut's row, F1, precision, recall and threshold."""
    n, n_pos = acts.shape[0], int(labels.sum())
    order = np.argsort(-acts, axis=0, kind="stable")
    values = np.take_along_axis(acts, order, axis=0)
    tp = np.cumsum(labels[order], axis=0)
    kept = np.arange(1, n + 1)[:, None]
    below = np.vstack([values[1:], np.zeros((1, acts.shape[1]))])
    valid = (values > 0) & (values > below)  # cut only between distinct, firing values
    f1 = np.where(valid, 2 * tp / (kept + n_pos), -1.0)
    precision = np.where(valid, tp / kept, 0.0)
    row = np.lexsort((-precision, -f1), axis=0)[0] if n else np.zeros(0, dtype=int)
    cols = np.arange(acts.shape[1])
    return {"f1": f1[row, cols], "precision": precision[row, cols],
            "recall": tp[row, cols] / max(n_pos, 1),
            "threshold": (values[row, cols] + below[row, cols]) / 2}


def rank_separating(positive: np.ndarray, negative: np.ndarray, top: int = 10
                    ) -> list[Candidate]:
    """Features ranked by how well `activation >= threshold` picks the positive examples.

    `positive` [n_pos, d] and `negative` [n_neg, d] are per-example max activations.
    """
    if positive.ndim != 2 or negative.ndim != 2 or positive.shape[1] != negative.shape[1]:
        raise ConfigError("positive and negative activations must be [n, d] with the same d")
    if len(positive) == 0 or len(negative) == 0:
        raise ConfigError("contrastive search needs at least one positive and one negative "
                          "example")
    acts = np.vstack([positive, negative]).astype(np.float64)
    labels = np.concatenate([np.ones(len(positive)), np.zeros(len(negative))])
    best = _best_cuts(acts, labels)
    fires = best["f1"] > 0
    ranked = np.lexsort((-best["precision"], -best["f1"]))
    return [Candidate(int(f), float(best["threshold"][f]), float(best["precision"][f]),
                      float(best["recall"][f]), float(best["f1"][f]),
                      float(positive[:, f].mean()), float(negative[:, f].mean()))
            for f in ranked[:top] if fires[f]]


@torch.no_grad()
def example_activations(model, tokenizer, dictionary, hook_point: str, texts: list[str], *,
                        progress: bool = False) -> np.ndarray:
    """Per-example max activation of every feature over the example's tokens, [n, d_sae]."""

    limit = getattr(model.config, "max_position_embeddings", None) or 1024
    out = np.zeros((len(texts), dictionary.d_sae), dtype=np.float32)
    for i, text in enumerate(tqdm(texts, desc="examples", leave=False, disable=not progress)):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:limit]
        if not ids:
            raise ConfigError(f"example {i + 1} has no tokens: {text[:40]!r}")
        acts = forward_to_hook(model, hook_point, torch.tensor([ids]))
        out[i] = dictionary.encode(acts[0].float()).amax(dim=0).numpy()
    return out


def flag_entry(dictionary_id: str, feature: int, label: str | None, threshold: float,
               severity: str, runbook_url: str) -> dict[str, Any]:
    """One entry of the monitor's flag file (services/monitor/flags.py FIELDS)."""
    name = (label or "").strip()[:NAME_LIMIT].strip() or f"feature {feature}"
    # 6 significant digits, not 6 decimals: a small threshold must not round to 0 (flag all).
    return {"dictionary": dictionary_id, "feature": int(feature), "name": name,
            "severity": severity, "min_activation": float(f"{threshold:.6g}"),
            "runbook_url": runbook_url}


def flag_entries(candidates: list[Candidate], dictionary_id: str, labels: list[str] | None,
                 severity: str, runbook_url: str) -> list[dict[str, Any]]:
    """The monitor's flag entries for the candidates (labels indexed by feature, if any)."""
    labels = labels or []
    return [flag_entry(dictionary_id, c.feature,
                       labels[c.feature] if c.feature < len(labels) else None, c.threshold,
                       severity, runbook_url) for c in candidates]


def flags_yaml(entries: list[dict[str, Any]], comments: list[str] | None = None) -> str:
    """A flag file: `flags:` list, with the search's figures as comments."""
    import yaml

    # Each comment line gets its own '#': a newline in a comment would otherwise end it and
    # turn the rest into YAML the monitor would try to parse.
    head = "".join(f"# {line}\n" for text in comments or [] for line in text.splitlines())
    return head + yaml.safe_dump({"flags": entries}, sort_keys=False, allow_unicode=True)


def search_labels(table: pl.DataFrame, text: str, top: int = 10) -> pl.DataFrame:
    """Rows whose label contains every word of `text` (case-insensitive), best scored first."""
    words = [w for w in text.lower().split() if w]
    if not words:
        raise ConfigError("--label needs some text to search for")
    lowered = pl.col("label").str.to_lowercase()
    hits = table.filter(pl.all_horizontal([lowered.str.contains(w, literal=True)
                                           for w in words]))
    return (hits.with_columns(lowered.str.contains(text.lower(), literal=True).alias("_exact"))
            .sort(["_exact", "interp_score", "density"], descending=True, nulls_last=True)
            .drop("_exact").head(top))
