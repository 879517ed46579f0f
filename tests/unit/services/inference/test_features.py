"""FeatureTable over the fixture's features.parquet (and a bundle without one)."""

from __future__ import annotations

import polars as pl
import pytest
from fixtures_model import D_SAE_MLP, D_SAE_RESID, DEAD_FEATURE

from featurewatch.errors import BundleError
from featurewatch.services.inference.features import FeatureTable


@pytest.fixture(scope="module")
def table(tiny):
    return FeatureTable.read(tiny.mlp_bundle / "features.parquet", D_SAE_MLP)


def test_rows_labels_and_max_activation(tiny, table):
    frame = pl.read_parquet(tiny.mlp_bundle / "features.parquet")
    row = frame.filter(pl.col("feature") == 7).row(0, named=True)
    assert table.label(7) == row["label"]
    assert table.max_activation(7) == pytest.approx(row["max_activation"])
    assert table.row(7)["top_examples"] == row["top_examples"]
    assert table.max_activation(DEAD_FEATURE) is None  # never fired: unknown, not 0


def test_search_is_case_insensitive_substring(tiny, table):
    frame = pl.read_parquet(tiny.mlp_bundle / "features.parquet")
    expected = sorted(frame.filter(pl.col("label").str.to_lowercase().str.contains("river"))
                      ["feature"].to_list())
    assert table.search("RIVER") == expected and expected
    assert table.search("") == list(range(D_SAE_MLP))
    assert table.search("no such label") == []


def test_missing_table_is_empty_but_usable(tiny):
    table = FeatureTable.read(tiny.resid_bundle / "features.parquet", D_SAE_RESID)
    assert not table.present
    assert table.label(3) == "" and table.max_activation(3) is None and table.row(3) is None
    assert table.summaries([3]) == [{"feature": 3, "label": "", "density": None,
                                     "max_activation": None, "interp_score": None}]


def test_corrupt_or_mismatched_table_is_a_bundle_error(tmp_path):
    bad = tmp_path / "features.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(BundleError, match="features.parquet"):
        FeatureTable.read(bad, 4)
    pl.DataFrame({"feature": [0, 9], "label": ["a", "b"]}).write_parquet(bad)
    with pytest.raises(BundleError, match="outside 0..3"):
        FeatureTable.read(bad, 4)
