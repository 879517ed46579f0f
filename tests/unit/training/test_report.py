"""The run report: plots from every dictionary and the analysis, missing inputs named."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest
from feature_tables import synthetic_analysis, write_synthetic_bundle

from featurewatch.errors import BundleError, ConfigError
from featurewatch.training.browser import write_browser
from featurewatch.training.report import load_runs, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL_PLOTS = {"feature_density.png", "training_curves.png", "l0_vs_loss_recovered.png",
             "interpretability.png", "universality.png", "feature_splitting.png"}


def make_run(tmp_path: Path, *, analysis: bool = True) -> Path:
    artifacts = tmp_path / "artifacts"
    for i, (name, size) in enumerate([("d16", 16), ("d64", 64)]):
        write_synthetic_bundle(artifacts / "dictionaries" / name, n_features=size, seed=i,
                               l0=20.0 - 5 * i, loss_recovered=0.7 + 0.1 * i)
    if analysis:
        (artifacts / "report").mkdir(parents=True)
        body = synthetic_analysis([("d16", 16), ("d64", 64)])
        (artifacts / "report" / "analysis.json").write_text(json.dumps(body))
    return artifacts


def images(page: Path) -> set[str]:
    return set(re.findall(r'<img src="([^"]+)"', page.read_text()))


def test_full_report_has_every_plot(tmp_path: Path) -> None:
    artifacts = make_run(tmp_path)
    write_browser(artifacts / "dictionaries" / "d16")
    page = write_report(artifacts)
    assert page == artifacts / "report" / "index.html"
    assert images(page) == ALL_PLOTS
    for name in ALL_PLOTS:
        data = (page.parent / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
    text = page.read_text()
    analysis = json.loads((artifacts / "report" / "analysis.json").read_text())
    median_f = analysis["interpretability"]["median_feature_score"]
    assert f"median score: features {median_f:.3f}" in text
    assert "L0 20.0, loss recovered 70.0%" in text and "L0 15.0, loss recovered 80.0%" in text
    assert "missing:" not in text
    # the metrics table links the browser that exists, and only that one
    assert text.count('href="../dictionaries/d16/browser/index.html"') == 1
    assert "dictionaries/d64/browser" not in text


def test_dead_and_ultralow_counts_come_from_densities(tmp_path: Path) -> None:
    artifacts = make_run(tmp_path, analysis=False)
    densities = pl.read_parquet(artifacts / "dictionaries" / "d64" / "features.parquet")["density"]
    dead, ultralow = int((densities == 0).sum()), int(((densities > 0) & (densities < 1e-6)).sum())
    text = write_report(artifacts).read_text()
    assert f"d64: 64 features, {dead} dead, {ultralow} ultralow" in text


def test_missing_analysis_is_named_and_its_plots_skipped(tmp_path: Path) -> None:
    artifacts = make_run(tmp_path, analysis=False)
    page = write_report(artifacts)
    assert images(page) == {"feature_density.png", "training_curves.png",
                            "l0_vs_loss_recovered.png"}
    text = page.read_text()
    assert "missing: report/analysis.json" in text
    assert "missing: analysis.json: universality.feature_best_corr" in text


def test_density_falls_back_to_the_feature_table(tmp_path: Path) -> None:
    artifacts = make_run(tmp_path, analysis=False)
    metrics_path = artifacts / "dictionaries" / "d16" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    expected = metrics.pop("feature_density")
    metrics_path.write_text(json.dumps(metrics))
    run = load_runs(artifacts / "dictionaries")[0]
    assert run.id == "d16" and run.density.tolist() == expected
    (artifacts / "dictionaries" / "d16" / "features.parquet").unlink()
    text = write_report(artifacts).read_text()
    assert "missing: dictionaries/d16: no feature_density in metrics.json" in text


def test_empty_run_says_so(tmp_path: Path) -> None:
    page = write_report(tmp_path)
    assert images(page) == set()
    assert "missing: dictionaries/: no trained dictionary found" in page.read_text()


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        write_report(tmp_path / "nope")
    artifacts = make_run(tmp_path)
    (artifacts / "report" / "analysis.json").write_text("[1,")
    with pytest.raises(BundleError, match=r"report/analysis\.json: not valid JSON"):
        write_report(artifacts)
    (artifacts / "report" / "analysis.json").unlink()
    (artifacts / "dictionaries" / "d16" / "history.json").write_text('{"step": 1}')
    with pytest.raises(BundleError, match=r"d16/history\.json: must hold a list"):
        write_report(artifacts)


def test_malformed_splits_are_named(tmp_path: Path) -> None:
    artifacts = make_run(tmp_path)
    analysis = json.loads((artifacts / "report" / "analysis.json").read_text())
    analysis["splits"]["links"] = [{"from": "d16", "feature": 0, "to": "d64"}]
    (artifacts / "report" / "analysis.json").write_text(json.dumps(analysis))
    with pytest.raises(BundleError, match="analysis.json: malformed 'splits'"):
        write_report(artifacts)
