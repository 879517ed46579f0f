"""What `featurewatch features` computes and prints: a feature page in the terminal, the
contrastive search over two example files, and the label search."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from featurewatch.training.features_cli import FeaturesConfig, bundle_dir, dictionary_id

LABEL_THRESHOLD = 0.25
"""min_activation of a flag proposed by label search, as a fraction of the max activation."""


def _shade(tokens: list[str], activations: list[float], top: float) -> str:
    """Rich markup: tokens on a background whose strength follows the activation."""
    from rich.markup import escape

    parts = []
    for tok, act in zip(tokens, activations, strict=True):
        text = escape(tok.replace("\n", "⏎"))
        if act > 0 and top > 0:
            level = min(5, max(1, round(5 * act / top)))
            parts.append(f"[on color({[224, 223, 222, 221, 220][level - 1]})][black]{text}"
                         f"[/black][/]")
        else:
            parts.append(text)
    return "".join(parts)


def render_feature(row: dict[str, Any], n_examples: int) -> None:
    """Print a feature page: figures, label, examples shaded by activation, logit effects."""
    from rich.console import Console

    console = Console()
    score = row["interp_score"]
    console.print(f"[bold]feature {row['feature']}[/bold]  {row['label'] or '(no label)'}")
    console.print(f"density {row['density']:.3g}   mean {row['mean_activation']:.3g}   "
                  f"max {row['max_activation']:.3g}   score "
                  f"{'-' if score is None else f'{score:.3f}'}")
    top = row["max_activation"] or 0.0
    for title, key in (("top examples", "top_examples"), ("interval examples",
                                                          "interval_examples")):
        console.print(f"\n[bold]{title}[/bold]")
        for ex in (row[key] or [])[:n_examples]:
            console.print(f"  {ex['max_activation']:7.3f} {ex['interval']:>12}  "
                          f"{_shade(ex['tokens'], ex['activations'], top)}")
    pos = ", ".join(f"{t!r} {v:+.2f}" for t, v in
                    zip(row["logit_pos_tokens"] or [], row["logit_pos_values"] or [], strict=True))
    neg = ", ".join(f"{t!r} {v:+.2f}" for t, v in
                    zip(row["logit_neg_tokens"] or [], row["logit_neg_values"] or [], strict=True))
    console.print(f"\n[bold]promotes[/bold] {pos}\n[bold]suppresses[/bold] {neg}")


def contrastive(cfg: FeaturesConfig, positive: str, negative: str
                ) -> tuple[list[dict], list[dict], str]:
    """(flag entries, table rows, title) of the features separating the two example files."""
    from featurewatch.training.bundle import FEATURES_FILE, load_bundle, model_binding
    from featurewatch.training.contrastive import (
        example_activations,
        flag_entries,
        rank_separating,
        read_examples,
    )
    from featurewatch.training.feature_table import read_table
    from featurewatch.training.lm import load_model

    pos_texts, neg_texts = read_examples(positive), read_examples(negative)
    path = bundle_dir(cfg)
    model_dir = Path(cfg.model) if cfg.model else Path(cfg.artifacts) / "model"
    model, tokenizer = load_model(model_dir)
    bundle = load_bundle(path, expect=model_binding(model_dir))
    args = (model, tokenizer, bundle.dictionary, bundle.hook_point)
    pos = example_activations(*args, pos_texts, progress=True)
    neg = example_activations(*args, neg_texts, progress=True)
    ranked = rank_separating(pos, neg, cfg.top)
    labels = read_table(path / FEATURES_FILE, ["label"])["label"].to_list() \
        if (path / FEATURES_FILE).is_file() else None
    if labels is not None and len(labels) != bundle.dictionary.d_sae:
        labels = None  # a stale table of an earlier dictionary: its labels name other features
    entries = flag_entries(ranked, bundle.dictionary_id, labels, cfg.severity, cfg.runbook_url)
    rows = [{"feature": c.feature, "threshold": c.threshold, "precision": c.precision,
             "recall": c.recall, "f1": c.f1, "pos_mean": c.positive_mean,
             "neg_mean": c.negative_mean, "label": e["name"]}
            for c, e in zip(ranked, entries, strict=True)]
    title = (f"features of {bundle.dictionary_id} separating {len(pos_texts)} positive from "
             f"{len(neg_texts)} negative examples (activation >= threshold)")
    return entries, rows, title


def label_search(cfg: FeaturesConfig, text: str) -> tuple[list[dict], list[dict], str]:
    """(flag entries, table rows, title) of the features whose label matches `text`."""
    from featurewatch.training.bundle import FEATURES_FILE
    from featurewatch.training.contrastive import flag_entry, search_labels
    from featurewatch.training.feature_table import read_table

    path = bundle_dir(cfg)
    hits = search_labels(read_table(path / FEATURES_FILE), text, cfg.top)
    rows = hits.select("feature", "density", "max_activation", "interp_score",
                       "label").to_dicts()
    # A label match has no threshold of its own: flag on a quarter of the max activation.
    entries = [flag_entry(dictionary_id(path), r["feature"], r["label"],
                          LABEL_THRESHOLD * r["max_activation"], cfg.severity, cfg.runbook_url)
               for r in rows]
    return entries, rows, f"features of {path.name} whose label matches {text!r}"
