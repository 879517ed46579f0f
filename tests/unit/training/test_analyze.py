"""analyze_bundle / analyze_run on the planted model: tables with known rows, analysis.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from feature_tables import FEATURE_SCHEMA
from planted_model import (
    ACT,
    FEATURES,
    HOOK,
    PLANTED,
    PROMOTED,
    SUPPRESSED,
    VOCAB,
    planted_split_dictionary,
    planted_tokens,
    save_planted_bundle,
    save_planted_model,
)

from featurewatch.errors import BundleError, ConfigError
from featurewatch.training.analyze import AnalyzeConfig, analyze_bundle, analyze_run
from featurewatch.training.bundle import model_binding, save_bundle
from featurewatch.training.interpret import parse_explanation

CFG = AnalyzeConfig(n_tokens=768, top_k=6, window=3, n_intervals=4, per_interval=2,
                    n_scored_features=12, n_scored_neurons=12, n_random_examples=4,
                    universality=False, bf16=False, threads=1)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """An artifacts directory: planted model, val tokens, a 20- and a 32-feature bundle."""
    root = tmp_path_factory.mktemp("artifacts")
    model = save_planted_model(root / "model")
    (root / "tokens").mkdir()
    np.save(root / "tokens" / "val.npy", planted_tokens())
    save_planted_bundle(model, root / "dictionaries" / "planted-20")
    save_bundle(planted_split_dictionary(), root / "dictionaries" / "planted-32",
                dictionary_id="planted-32", binding=model_binding(model), hook_point=HOOK,
                metrics={"l0": 1.0, "loss_recovered": 0.9})
    return root


@pytest.fixture(scope="module")
def analysed(run) -> dict:
    return analyze_bundle(run / "model", run / "dictionaries" / "planted-20",
                          run / "tokens" / "val.npy", CFG, progress=False)


def test_tables_have_the_shared_schema(run, analysed):
    bundle = run / "dictionaries" / "planted-20"
    features = pl.read_parquet(bundle / "features.parquet")
    neurons = pl.read_parquet(bundle / "neurons.parquet")
    assert features.schema == FEATURE_SCHEMA and neurons.schema == FEATURE_SCHEMA
    assert features.height == FEATURES and neurons.height == VOCAB
    assert analysed["live_features"] == VOCAB
    assert analysed["n_features_scored"] == 12 and analysed["n_neurons_scored"] == 12


def test_planted_feature_row(run, analysed):
    row = pl.read_parquet(run / "dictionaries" / "planted-20" / "features.parquet").row(
        PLANTED, named=True)
    tokens = planted_tokens().reshape(-1)
    n5, n6 = (tokens == PLANTED).sum(), (tokens == PLANTED + 1).sum()
    assert row["density"] == pytest.approx((n5 + n6) / tokens.size)
    assert row["max_activation"] == pytest.approx(ACT, rel=1e-5)
    assert len(row["top_examples"]) == 6
    for ex in row["top_examples"]:
        assert ex["tokens"][ex["center"]] == f"t{PLANTED}" and ex["interval"] == "top"
        assert ex["max_activation"] == pytest.approx(ACT, rel=1e-5)
    assert {ex["interval"] for ex in row["interval_examples"]} == \
        {f"{ACT / 2:.3g}-{3 * ACT / 4:.3g}", f"{3 * ACT / 4:.3g}-{ACT:.3g}"}
    assert row["logit_pos_tokens"][0] == f"t{PROMOTED}"
    assert row["logit_neg_tokens"][0] == f"t{SUPPRESSED}"
    assert row["logit_pos_values"][0] > 0 > row["logit_neg_values"][0]
    table, previous = parse_explanation(row["label"])
    assert not previous and table[f"t{PLANTED}"] == 9
    assert set(table) <= {f"t{PLANTED}", f"t{PLANTED + 1}"}
    assert sum(row["act_hist_counts"]) == n5 + n6


def test_planted_neuron_row_matches_the_feature_reading_it(run, analysed):
    bundle = run / "dictionaries" / "planted-20"
    neuron = pl.read_parquet(bundle / "neurons.parquet").row(PLANTED, named=True)
    feature = pl.read_parquet(bundle / "features.parquet").row(PLANTED, named=True)
    tokens = planted_tokens().reshape(-1)
    assert neuron["density"] == pytest.approx((tokens == PLANTED).sum() / tokens.size)
    assert neuron["max_activation"] == pytest.approx(ACT, rel=1e-5)
    assert neuron["mean_activation"] == pytest.approx(ACT, rel=1e-5)
    assert all(ex["tokens"][ex["center"]] == f"t{PLANTED}" for ex in neuron["top_examples"])
    # neuron 5's direction is feature 5's decoder row: the same logit effects
    assert neuron["logit_pos_tokens"][0] == f"t{PROMOTED}"
    assert neuron["logit_neg_tokens"][0] == f"t{SUPPRESSED}"
    assert neuron["logit_pos_values"] == pytest.approx(feature["logit_pos_values"], rel=1e-5)
    # a neuron that writes nothing has no effect on any logit once median-centred
    silent = pl.read_parquet(bundle / "neurons.parquet").row(0, named=True)
    assert max(map(abs, silent["logit_pos_values"] + silent["logit_neg_values"])) < 1e-6


def test_dead_features_have_empty_rows(run, analysed):
    row = pl.read_parquet(run / "dictionaries" / "planted-20" / "features.parquet").row(
        FEATURES - 1, named=True)
    assert row["density"] == 0 and row["label"] == "" and row["interp_score"] is None
    assert row["top_examples"] == [] and row["act_hist_counts"] == []


def test_token_features_and_neurons_are_perfectly_interpretable(run, analysed):
    # each code fires on exactly one token here, so the offline pair predicts it exactly
    assert analysed["median_feature_score"] == pytest.approx(1.0, abs=1e-3)
    assert analysed["median_neuron_score"] == pytest.approx(1.0, abs=1e-6)


def test_run_report_links_sizes_and_summarises(run):
    summary = analyze_run(run, CFG, progress=False)
    analysis = json.loads((run / "report" / "analysis.json").read_text())
    assert [d["id"] for d in analysis["dictionaries"]] == ["planted-20", "planted-32"]
    assert analysis["dictionaries"][1]["loss_recovered"] == 0.9
    splits = analysis["splits"]
    assert splits["dictionaries"] == ["planted-20", "planted-32"]
    link5 = [lk for lk in splits["links"] if lk["feature"] == PLANTED][0]
    sims = dict(link5["children"])
    assert set(sims) == {5, 6, 21, 22}
    n5, n6 = [(planted_tokens() == t).sum() for t in (PLANTED, PLANTED + 1)]
    assert sims[5] == pytest.approx(math.sqrt(n5 / (n5 + n6 / 4)), abs=1e-4)
    assert sims[6] == pytest.approx(0.5 * math.sqrt(n6 / (n5 + n6 / 4)), abs=1e-4)
    assert splits["example"]["feature"] == PLANTED
    interp = analysis["interpretability"]
    assert interp["n_features_scored"] > 0 and interp["median_neuron_score"] == pytest.approx(1)
    assert analysis["universality"] == {"skipped": "analyze.universality = false"}
    assert summary["split_example"] == [1, 4]
    assert (run / "dictionaries" / "planted-32" / "features.parquet").is_file()
    # every bundle's browser was rewritten with the split links and the report link
    index_js = run / "dictionaries" / "planted-20" / "browser" / "data" / "index.js"
    index = json.loads(index_js.read_text().split(" = ", 1)[1].rstrip(";\n"))
    assert index["meta"]["report_href"] == "../../../report/index.html"
    assert [d["id"] for d in index["meta"]["split_dictionaries"]] == ["planted-20", "planted-32"]
    chunk = (index_js.parent / "features_000.js").read_text()
    records = json.loads(chunk[chunk.index("["): chunk.rindex("]") + 1])
    assert sorted(j for _, j, _ in records[PLANTED]["splits"]["children"]) == [5, 6, 21, 22]


def test_universality_needs_a_model_the_job_trained(run):
    cfg = AnalyzeConfig(**{**CFG.__dict__, "universality": True})
    analyze_run(run, cfg, progress=False)
    analysis = json.loads((run / "report" / "analysis.json").read_text())
    assert "was not trained by this job" in analysis["universality"]["skipped"]


def test_bad_inputs_are_clear_errors(run, tmp_path):
    model = run / "model"
    with pytest.raises(BundleError, match="does not exist"):
        analyze_bundle(model, tmp_path / "nope", planted_tokens(), CFG, progress=False)
    with pytest.raises(ConfigError, match="token file does not exist"):
        analyze_bundle(model, run / "dictionaries" / "planted-20", tmp_path / "x.npy", CFG)
    with pytest.raises(ConfigError, match="reach 99"):
        analyze_bundle(model, run / "dictionaries" / "planted-20",
                       np.full((4, 8), 99), CFG, progress=False)
    with pytest.raises(ConfigError, match="non-empty"):
        analyze_bundle(model, run / "dictionaries" / "planted-20", np.zeros((0, 8)), CFG)
    with pytest.raises(BundleError, match="no dictionary bundles"):
        analyze_run(tmp_path, CFG, progress=False)
    with pytest.raises(ConfigError, match="split_threshold"):
        AnalyzeConfig(split_threshold=1.5)
    with pytest.raises(ConfigError, match="llm_url"):
        AnalyzeConfig(explainer="openai")


def test_bundle_of_another_model_is_refused(run, tmp_path):
    other = save_planted_model(tmp_path / "other")
    (other / "model.safetensors").write_bytes(b"different weights")
    with pytest.raises(BundleError, match="another model"):
        analyze_bundle(run / "model", save_planted_bundle(other, tmp_path / "b"),
                       planted_tokens(), CFG, progress=False)
