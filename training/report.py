"""The whole-run report: `artifacts/report/index.html` with matplotlib PNG plots.

Reads what the training steps left behind — every `dictionaries/<id>/` (metrics.json,
history.json, features.parquet) and `report/analysis.json` — and plots the log-density
histograms, training curves, L0 against loss recovered, interpretability and universality
distributions of features against neurons, and one feature splitting across dictionary sizes.
Whatever is missing is named on the page in place of its plot.
"""

from __future__ import annotations

import html
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from featurewatch.errors import BundleError, ConfigError
from featurewatch.training.bundle import BROWSER_DIR, CFG_FILE, FEATURES_FILE, METRICS_FILE
from featurewatch.training.report_plots import (
    plot_density,
    plot_distributions,
    plot_split,
    plot_tradeoff,
    plot_training,
)
from featurewatch.training.report_splits import split_tree

REPORT_DIR = "report"
ANALYSIS_FILE = "analysis.json"
HISTORY_FILE = "history.json"
TABLE_KEYS = ("d_sae", "l0", "loss_recovered", "fvu", "mse", "dead", "ultralow", "dense")


@dataclass
class DictionaryRun:
    """What the report knows about one trained dictionary."""

    id: str
    path: Path
    d_sae: int | None
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    density: np.ndarray | None = None


@dataclass
class Section:
    """One block of the page: a title, an optional plot and the notes under it."""

    title: str
    image: str | None = None
    notes: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def write_report(artifacts_dir: str | Path) -> Path:
    """Write `<artifacts>/report/index.html` (+ PNGs) and return the page's path."""
    artifacts = Path(artifacts_dir)
    if not artifacts.is_dir():
        raise ConfigError(f"artifacts: directory {artifacts} does not exist")
    out = artifacts / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    runs = load_runs(artifacts / "dictionaries")
    analysis = _read_json(out / ANALYSIS_FILE)
    sections = [
        _density_section(runs, out), _training_section(runs, out),
        _tradeoff_section(runs, analysis, out), _interp_section(analysis, out),
        _universality_section(analysis, out), _split_section(runs, analysis, out),
    ]
    page = out / "index.html"
    page.write_text(_render_page(artifacts, runs, analysis, sections), encoding="utf-8")
    return page


def _read_json(path: Path) -> Any:
    """A JSON file's content, or None when it is missing (unreadable files are errors)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None


def load_runs(dictionaries_dir: Path) -> list[DictionaryRun]:
    """Every dictionary bundle under `dictionaries_dir`, smallest d_sae first."""
    runs = []
    for path in sorted(p for p in dictionaries_dir.glob("*") if p.is_dir()) if \
            dictionaries_dir.is_dir() else []:
        cfg = _read_json(path / CFG_FILE) or {}
        metrics = _read_json(path / METRICS_FILE) or {}
        if not cfg and not metrics:
            continue  # not a bundle (e.g. a half-written directory)
        fw = cfg.get("featurewatch") or {}
        history = _read_json(path / HISTORY_FILE) or []
        if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
            raise BundleError(f"{path / HISTORY_FILE}: must hold a list of {{step, loss, ...}} "
                              "objects")
        run = DictionaryRun(id=fw.get("dictionary_id") or path.name, path=path,
                            d_sae=cfg.get("d_sae"), metrics=metrics, history=history)
        run.density = _densities(run)
        runs.append(run)
    return sorted(runs, key=lambda r: (r.d_sae or 0, r.id))


def _densities(run: DictionaryRun) -> np.ndarray | None:
    if isinstance(run.metrics.get("feature_density"), list):
        return np.asarray(run.metrics["feature_density"], dtype=np.float64)
    if (run.path / FEATURES_FILE).is_file():
        return pl.read_parquet(run.path / FEATURES_FILE, columns=["density"])["density"].to_numpy()
    return None


def _save(fig: Figure, out: Path, name: str) -> str:
    fig.savefig(out / name)
    return name


def _density_section(runs: list[DictionaryRun], out: Path) -> Section:
    section = Section("Feature density (log10, per dictionary)")
    with_density = [r for r in runs if r.density is not None]
    section.missing = [f"dictionaries/{r.id}: no feature_density in {METRICS_FILE} and no "
                       f"{FEATURES_FILE}" for r in runs if r.density is None]
    if not runs:
        section.missing.append("dictionaries/: no trained dictionary found")
    if with_density:
        section.image = _save(plot_density({r.id: r.density for r in with_density}), out,
                              "feature_density.png")
        for r in with_density:
            dead = int((r.density == 0).sum())
            ultralow = int(((r.density > 0) & (r.density < 1e-6)).sum())
            section.notes.append(f"{r.id}: {len(r.density)} features, {dead} dead, "
                                 f"{ultralow} ultralow (< 1e-6), "
                                 f"{int((r.density > 0.01).sum())} denser than 1%")
    return section


def _training_section(runs: list[DictionaryRun], out: Path) -> Section:
    section = Section("Training curves")
    with_history = {r.id: r.history for r in runs if r.history}
    section.missing = [f"dictionaries/{r.id}/{HISTORY_FILE}" for r in runs if not r.history]
    if with_history:
        section.image = _save(plot_training(with_history), out, "training_curves.png")
    return section


def _tradeoff_points(runs: list[DictionaryRun], analysis: dict | None) -> list[dict]:
    points = {r.id: {"id": r.id, "d_sae": r.d_sae, "l0": r.metrics.get("l0"),
                     "loss_recovered": r.metrics.get("loss_recovered")} for r in runs}
    for entry in (analysis or {}).get("dictionaries") or []:
        point = points.setdefault(entry.get("id"), {"id": entry.get("id")})
        for key in ("d_sae", "l0", "loss_recovered"):
            if point.get(key) is None:
                point[key] = entry.get(key)
    return [p for p in points.values() if _finite(p.get("l0")) and _finite(p.get("loss_recovered"))]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _tradeoff_section(runs: list[DictionaryRun], analysis: dict | None, out: Path) -> Section:
    section = Section("Sparsity against loss recovered")
    points = _tradeoff_points(runs, analysis)
    if not points:
        section.missing.append(f"l0 and loss_recovered: in no {METRICS_FILE} and no "
                               f"{ANALYSIS_FILE}")
        return section
    section.image = _save(plot_tradeoff(points), out, "l0_vs_loss_recovered.png")
    section.notes = [f"{p['id']}: L0 {p['l0']:.1f}, loss recovered {100 * p['loss_recovered']:.1f}%"
                     for p in points]
    return section


def _pair(analysis: dict | None, table: str, keys: tuple[str, str, str, str]) -> tuple | None:
    """(feature values, neuron values, feature median, neuron median) of one analysis table."""
    data = (analysis or {}).get(table) or {}
    features, neurons = data.get(keys[0]), data.get(keys[1])
    if not features or not neurons:
        return None
    features = np.asarray([v for v in features if v is not None], dtype=np.float64)
    neurons = np.asarray([v for v in neurons if v is not None], dtype=np.float64)
    med_f = data.get(keys[2], float(np.nanmedian(features)))
    med_n = data.get(keys[3], float(np.nanmedian(neurons)))
    return features, neurons, med_f, med_n


def _interp_section(analysis: dict | None, out: Path) -> Section:
    section = Section("Interpretability scores: features against neurons")
    pair = _pair(analysis, "interpretability", ("feature_scores", "neuron_scores",
                                                "median_feature_score", "median_neuron_score"))
    if pair is None:
        section.missing.append(f"{ANALYSIS_FILE}: interpretability.feature_scores / neuron_scores")
        return section
    fig = plot_distributions(pair, xlabel="explanation score (correlation of simulated and true "
                             "activations)", value_range=(-1.0, 1.0))
    section.image = _save(fig, out, "interpretability.png")
    section.notes = [f"median score: features {pair[2]:.3f}, neurons {pair[3]:.3f} "
                     f"({len(pair[0])} features, {len(pair[1])} neurons scored; "
                     "paper: 0.74 vs 0.53)"]
    return section


def _universality_section(analysis: dict | None, out: Path) -> Section:
    section = Section("Universality: best correlation with the seed-B model")
    pair = _pair(analysis, "universality", ("feature_best_corr", "neuron_best_corr",
                                            "median_feature", "median_neuron"))
    if pair is None:
        section.missing.append(f"{ANALYSIS_FILE}: universality.feature_best_corr / "
                               "neuron_best_corr")
        return section
    fig = plot_distributions(pair, xlabel="best Pearson correlation with any unit of model B",
                             value_range=(-0.05, 1.0))
    section.image = _save(fig, out, "universality.png")
    section.notes = [f"median best correlation: features {pair[2]:.3f}, neurons {pair[3]:.3f} "
                     "(paper: 0.72 vs 0.46)"]
    return section


def _labels(runs: list[DictionaryRun], levels: list[dict]) -> dict[tuple[str, int], str]:
    """Labels of the example's features: the example's own, else the dictionary's table."""
    labels = {(lvl["dictionary"], n["feature"]): n["label"] for lvl in levels
              for n in lvl["nodes"] if n.get("label")}
    for run in runs:
        wanted = {n["feature"] for lvl in levels if lvl["dictionary"] == run.id
                  for n in lvl["nodes"] if (run.id, n["feature"]) not in labels}
        if wanted and (run.path / FEATURES_FILE).is_file():
            table = pl.read_parquet(run.path / FEATURES_FILE, columns=["feature", "label"])
            for feature, label in table.filter(pl.col("feature").is_in(sorted(wanted))).iter_rows():
                labels[(run.id, int(feature))] = label or ""
    return labels


def _split_section(runs: list[DictionaryRun], analysis: dict | None, out: Path) -> Section:
    section = Section("Feature splitting across dictionary sizes")
    splits = (analysis or {}).get("splits") or {}
    try:
        levels = split_tree(splits)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{ANALYSIS_FILE}: malformed 'splits' ({exc!r})") from None
    if len(levels) < 2:
        section.missing.append(f"{ANALYSIS_FILE}: splits.links / splits.example")
        return section
    labels = _labels(runs, levels)
    section.image = _save(plot_split(levels, labels), out, "feature_splitting.png")
    root = (levels[0]["dictionary"], levels[0]["nodes"][0]["feature"])
    section.notes = [f"{root[0]} feature {root[1]} ({labels.get(root) or 'unlabelled'}) → "
                     + " → ".join(f"{lvl['total']} features in {lvl['dictionary']}"
                                  for lvl in levels[1:])]
    return section


def _metrics_table(runs: list[DictionaryRun], out: Path) -> str:
    if not runs:
        return ""
    head = "".join(f"<th>{k}</th>" for k in ("dictionary", *TABLE_KEYS, "browser"))
    rows = []
    for run in runs:
        values = {"d_sae": run.d_sae, **run.metrics}
        cells = [f"<td>{_fmt(values.get(k), k)}</td>" for k in TABLE_KEYS]
        browser = run.path / BROWSER_DIR / "index.html"
        link = (f'<a href="{html.escape(_rel(browser, out))}">open</a>' if browser.is_file()
                else "—")
        rows.append(f"<tr><td>{html.escape(run.id)}</td>{''.join(cells)}<td>{link}</td></tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _rel(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target, start)).as_posix()


def _fmt(value: Any, key: str) -> str:
    if not _finite(value):
        return "—"
    if key == "loss_recovered":
        return f"{100 * value:.1f}%"
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


def _render_section(section: Section) -> str:
    parts = [f"<section><h2>{html.escape(section.title)}</h2>"]
    if section.image:
        parts.append(f'<img src="{html.escape(section.image)}" alt="{html.escape(section.title)}">')
    parts += [f"<p>{html.escape(note)}</p>" for note in section.notes]
    parts += [f'<p class="missing">missing: {html.escape(m)}</p>' for m in section.missing]
    return "".join(parts) + "</section>"


def _render_page(artifacts: Path, runs: list[DictionaryRun], analysis: dict | None,
                 sections: list[Section]) -> str:
    note = "" if analysis is not None else (
        f'<p class="missing">missing: {REPORT_DIR}/{ANALYSIS_FILE} — run `featurewatch train '
        "analyze`; interpretability, universality and splitting are not shown</p>")
    body = "".join(_render_section(s) for s in sections)
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<title>featurewatch run report</title><style>" + _CSS + "</style></head><body>"
        f"<h1>featurewatch run report</h1><p class='sub'>{html.escape(str(artifacts))}</p>"
        f"{note}{_metrics_table(runs, artifacts / REPORT_DIR)}{body}</body></html>\n"
    )


_CSS = """
body{font:14px/1.5 system-ui,'DejaVu Sans',sans-serif;color:#1c2430;background:#f5f6f8;
max-width:1000px;margin:0 auto;padding:24px}
h1{margin:0}.sub{color:#6b7482;margin-top:2px;font-family:monospace}
section{background:#fff;border:1px solid #e2e5ea;border-radius:8px;padding:14px 18px;margin:16px 0}
h2{font-size:15px;margin:0 0 8px}img{max-width:100%}
table{border-collapse:collapse;background:#fff;width:100%;font-size:13px}
th,td{border:1px solid #e2e5ea;padding:4px 8px;text-align:right}th{background:#f0f2f5}
td:first-child{text-align:left;font-family:monospace}
.missing{color:#9a5b00;background:#fff8e8;border:1px solid #f3cf8f;border-radius:6px;padding:6px 10px}
"""
