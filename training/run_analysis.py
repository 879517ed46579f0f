"""Whole-run analysis → `report/analysis.json`: interpretability of features vs neurons,
universality against a second model (same config, seed + 1), and feature splitting across the
run's dictionary sizes. Bundles without tables are analysed first; afterwards every bundle's
feature browser is rewritten so it shows the split links (the report page is `report`'s job).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from featurewatch.errors import BundleError
from featurewatch.training import analyze as an
from featurewatch.training.bundle import CFG_FILE, FEATURES_FILE, load_bundle
from featurewatch.training.bundle_analysis import BundleWork, finite_median
from featurewatch.training.feature_stats import SparseCodes
from featurewatch.training.feature_table import read_table
from featurewatch.training.splitting import Level, split_report

ANALYSIS_FILE = "analysis.json"


@dataclass(frozen=True)
class RunInputs:
    """Where a run's model, tokens and configuration are."""

    root: Path
    model_dir: Path
    val_tokens: Any
    train_cfg: Any
    own_model: bool
    """The job trained this model itself, so a second seed of it can be trained."""
    loaded: tuple[Any, Any] | None = None
    """(model, tokenizer) when locating already loaded them, so analysis need not again."""

    @classmethod
    def locate(cls, root: Path, train_cfg: Any = None) -> RunInputs:
        from featurewatch.training.pipeline import Artifacts

        art = Artifacts(root)
        foreign = bool(train_cfg is not None and train_cfg.activations.model_dir)
        if not foreign:
            return cls(root, art.model, art.tokens / "val.npy", train_cfg,
                       (art.model / "train_stats.json").is_file())
        from featurewatch.training import steps
        from featurewatch.training.lm import load_model

        directory = steps.model_dir(train_cfg, art)
        model, tokenizer = load_model(directory)
        tokens = steps.tokens_for_model(art, directory, tokenizer, "val",
                                        steps.context_size_for(model, train_cfg))
        return cls(root, directory, tokens, train_cfg, False, (model, tokenizer))


def discover_bundles(artifacts: Path) -> list[Path]:
    """Bundle directories under artifacts/dictionaries, smallest dictionary first."""
    root = artifacts / "dictionaries"
    found = [p for p in sorted(root.glob("*")) if (p / CFG_FILE).is_file()] \
        if root.is_dir() else []
    if not found:
        raise BundleError(f"{root}: no dictionary bundles (cfg.json) found; run "
                          "`featurewatch train sae`, `evaluate` and `bundle` first")
    return sorted(found, key=lambda p: (json.loads((p / CFG_FILE).read_text())["d_sae"], p.name))


def _scores(table: pl.DataFrame) -> list[float]:
    return [round(float(v), 4) for v in table["interp_score"].drop_nulls().drop_nans()]


def interpretability_section(features: pl.DataFrame, neurons: pl.DataFrame) -> dict[str, Any]:
    """Median simulation scores of the scored features and neurons."""
    f, n = _scores(features), _scores(neurons)
    return {"median_feature_score": finite_median(f), "median_neuron_score": finite_median(n),
            "n_features_scored": len(f), "n_neurons_scored": len(n),
            "feature_scores": f, "neuron_scores": n}


def dictionary_entry(path: Path, d_sae: int) -> dict[str, Any]:
    """id, size, L0 and loss recovered from the bundle's metrics.json."""
    metrics_path = path / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return {"id": path.name, "d_sae": d_sae, "l0": metrics.get("l0"),
            "loss_recovered": metrics.get("loss_recovered")}


def primary_index(sizes: list[int], d_in: int) -> int:
    """The dictionary closest to 8 × d_in features (the paper's A/1: 4096 for 512 neurons)."""
    return min(range(len(sizes)), key=lambda i: (abs(math.log(sizes[i] / (8 * d_in))), -i))


def read_or_analyze(work: BundleWork, path: Path) -> tuple[pl.DataFrame, SparseCodes | None]:
    """The bundle's features table, computing it (and neurons.parquet) first if missing; with
    the dictionary's codes when that computed them, so they need not be encoded again."""
    if not (path / FEATURES_FILE).is_file() or not (path / an.NEURONS_FILE).is_file():
        features = work.analyze(path).features
        return features.table, features.codes
    return read_table(path / FEATURES_FILE), None


def _write_browsers(paths: list[Path], analysis: dict[str, Any],
                    tables: list[pl.DataFrame]) -> None:
    """Rewrite each bundle's feature browser, which shows the run's split links; `tables` are
    the bundles' features tables, already in memory."""
    from featurewatch.training.browser import write_browser

    for path, table in zip(paths, tables, strict=True):
        write_browser(path, report=analysis, tables={"features": table})


def run_sections(inputs: RunInputs, work: BundleWork, bundles: list[Path], *,
                 progress: bool = True) -> dict[str, Any]:
    """Compute every section, write analysis.json, return a short summary."""
    from featurewatch.training.universality_run import universality_section

    cfg, report = work.cfg, inputs.root / "report"
    loaded = [load_bundle(p) for p in bundles]
    primary = primary_index([b.dictionary.d_sae for b in loaded], loaded[0].dictionary.d_in)
    hook = loaded[primary].hook_point
    levels, tables = [], []
    for path, bundle in zip(bundles, loaded, strict=True):
        table, codes = read_or_analyze(work, path)
        tables.append(table)
        if bundle.hook_point == hook:
            codes = codes if codes is not None else work.dictionary_codes(bundle)
            levels.append(Level(bundle.dictionary_id, codes, table["label"].to_list(),
                                table["density"].to_numpy()))
    neurons = read_table(bundles[primary] / an.NEURONS_FILE, ["interp_score"])
    by_id = {lv.dictionary_id: lv for lv in levels}
    analysis = {
        "interpretability": {"dictionary": loaded[primary].dictionary_id,
                             **interpretability_section(tables[primary], neurons)},
        "universality": universality_section(inputs, work, loaded[primary],
                                             by_id[loaded[primary].dictionary_id].codes,
                                             progress=progress),
        "splits": split_report(levels, cfg.split_threshold, cfg.split_children),
        "dictionaries": [dictionary_entry(p, b.dictionary.d_sae)
                         for p, b in zip(bundles, loaded, strict=True)],
    }
    report.mkdir(parents=True, exist_ok=True)
    (report / ANALYSIS_FILE).write_text(json.dumps(analysis, indent=1))
    _write_browsers(bundles, analysis, tables)
    return summary(analysis)


def summary(analysis: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of an analysis (what the step log and the issue note report)."""
    interp, univ = analysis["interpretability"], analysis["universality"]
    example = analysis["splits"].get("example") or {}
    return {
        "median_feature_score": interp["median_feature_score"],
        "median_neuron_score": interp["median_neuron_score"],
        "universality_median_feature": univ.get("median_feature"),
        "universality_median_neuron": univ.get("median_neuron"),
        "split_example": [len(level["features"]) for level in example.get("levels", [])],
    }


def run_analysis(artifacts_dir: str | Path, cfg: an.AnalyzeConfig, *, train_cfg: Any = None,
                 progress: bool = True) -> dict[str, Any]:
    """Analyse every dictionary of the run under `artifacts_dir`; write report/analysis.json."""
    from featurewatch.training.lm import torch_threads

    inputs = RunInputs.locate(Path(artifacts_dir), train_cfg)
    bundles = discover_bundles(inputs.root)
    with torch_threads(cfg.threads):
        work = BundleWork.open(inputs.model_dir, inputs.val_tokens, cfg, progress=progress,
                               loaded=inputs.loaded)
        return run_sections(inputs, work, bundles, progress=progress)
