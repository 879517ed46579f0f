"""Reading bundle info without torch: cfg.json, metrics.json or features.parquet densities."""

from __future__ import annotations

import json

import polars as pl
import pytest
from trace_events import write_bundle

from featurewatch.errors import BundleError
from featurewatch.services.monitor.dictionaries import read_bundle_info


def test_cfg_and_metrics_density(tmp_path):
    path = write_bundle(tmp_path / "b", "dict-a", 4, density=[0.1, 0.0, 0.5, 0.2])
    info = read_bundle_info(path)
    assert (info.dictionary_id, info.d_sae, info.model_id) == ("dict-a", 4, "test-model")
    assert info.density.tolist() == [0.1, 0.0, 0.5, 0.2]


def test_density_from_features_parquet(tmp_path):
    path = write_bundle(tmp_path / "b", "dict-a", 3)
    pl.DataFrame({"feature": [0, 1, 2], "density": [0.2, None, 0.3]}).write_parquet(
        path / "features.parquet")
    assert read_bundle_info(path).density.tolist() == [0.2, 0.0, 0.3]


def test_no_density_recorded(tmp_path):
    assert read_bundle_info(write_bundle(tmp_path / "b", "x", 3)).density is None


def test_dictionary_id_defaults_to_directory_name(tmp_path):
    path = tmp_path / "my-dict"
    path.mkdir()
    (path / "cfg.json").write_text(json.dumps({"d_sae": 8}))
    assert read_bundle_info(path).dictionary_id == "my-dict"


@pytest.mark.parametrize(("files", "message"), [
    ({}, "cfg.json: file is missing"),
    ({"cfg.json": "{"}, "cfg.json: not valid JSON"),
    ({"cfg.json": '{"d_sae": 0}'}, "field 'd_sae'=0"),
    ({"cfg.json": '{"d_sae": 2}', "metrics.json": '{"feature_density": [0.1, 0.2, 0.3]}'},
     "has 3 densities but d_sae=2"),
    ({"cfg.json": '{"d_sae": 2}', "metrics.json": '{"feature_density": [0.1, 1.5]}'},
     r"fractions in \[0, 1\]"),
])
def test_bad_bundles_name_the_file(tmp_path, files, message):
    path = tmp_path / "b"
    path.mkdir()
    for name, text in files.items():
        (path / name).write_text(text)
    with pytest.raises(BundleError, match=message):
        read_bundle_info(path)


def test_missing_directory(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        read_bundle_info(tmp_path / "nope")
