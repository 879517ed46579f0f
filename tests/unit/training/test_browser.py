"""The static feature browser: data files, chunking, escaping, split links, missing inputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest
from feature_tables import (
    example,
    feature_rows,
    synthetic_analysis,
    write_feature_table,
    write_synthetic_bundle,
)

from featurewatch.errors import BundleError
from featurewatch.training.browser import ASSETS, REQUIRED_COLUMNS, write_browser

TRICKY = ["<b>", " &amp;", '"q"', "\n", "\t", "  ", "</script>", "", "\u2028"]
TRICKY_ACTS = [0.0, 0.5, 1.25, 0.0, 0.0, 2.0, 7.3125, 0.0, 0.125]


def read_index(browser: Path) -> dict:
    text = (browser / "data" / "index.js").read_text(encoding="ascii")
    prefix = "window.FEATUREWATCH_INDEX = "
    assert text.startswith(prefix) and text.endswith(";\n")
    return json.loads(text[len(prefix):-2])


def read_chunk(browser: Path, kind: str, n: int) -> list[dict]:
    text = (browser / "data" / f"{kind}_{n:03d}.js").read_text(encoding="ascii")
    match = re.fullmatch(r'featurewatchChunk\("(\w+)", (\d+), (.*)\);\n', text, re.S)
    assert match and match[1] == kind and int(match[2]) == n
    return json.loads(match[3])


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    planted = {517: {"label": "base64 payloads", "max_activation": 7.3125,
                     "top_examples": [example(TRICKY, TRICKY_ACTS, "top")],
                     "act_hist_edges": [0.0, 1.0, 2.0, 4.0], "act_hist_counts": [50, 7, 1]}}
    return write_synthetic_bundle(tmp_path / "artifacts" / "dictionaries" / "d600",
                                  n_features=600, n_neurons=40, planted=planted)


def test_site_has_assets_index_and_chunks(bundle: Path) -> None:
    page = write_browser(bundle)
    browser = bundle / "browser"
    assert page == browser / "index.html"
    for name in ASSETS:
        assert (browser / name).is_file()
    assert sorted(p.name for p in (browser / "data").iterdir()) == [
        "features_000.js", "features_001.js", "features_002.js", "index.js", "neurons_000.js"]
    index = read_index(browser)
    assert index["chunk_size"] == 256
    features = index["kinds"]["features"]
    assert features["count"] == 600 and features["feature"] == list(range(600))
    table = pl.read_parquet(bundle / "features.parquet")
    assert features["label"][517] == "base64 payloads"
    assert features["max_activation"][517] == 7.3125
    assert features["density"][:5] == pytest.approx(table["density"][:5].to_list(), rel=1e-5)
    assert index["kinds"]["neurons"]["count"] == 40
    assert index["meta"]["dictionary_id"] == "d600" and index["meta"]["metrics"]["l0"] == 12
    assert [len(read_chunk(browser, "features", n)) for n in range(3)] == [256, 256, 88]


def test_planted_record_round_trips_tricky_tokens(bundle: Path) -> None:
    write_browser(bundle)
    record = read_chunk(bundle / "browser", "features", 2)[517 - 512]
    assert record["feature"] == 517
    tokens, acts, center, max_act, interval = record["top"][0]
    assert tokens == TRICKY  # <, &, quotes, whitespace, empty, U+2028 survive unchanged
    assert acts == TRICKY_ACTS and center == 6 and max_act == 7.3125 and interval == "top"
    assert record["hist"] == [[0, 1, 2, 4], [50, 7, 1]]
    row = pl.read_parquet(bundle / "features.parquet").row(517, named=True)
    assert [t for t, _ in record["pos"]] == row["logit_pos_tokens"]
    assert [v for _, v in record["neg"]] == pytest.approx(row["logit_neg_values"], rel=1e-5)
    # The data files are pure ASCII, so no raw "</script>" or line separator can break them.
    raw = (bundle / "browser" / "data" / "features_002.js").read_bytes()
    assert raw.isascii() and b"\\u2028" in raw


def test_rows_are_ordered_by_feature_id(tmp_path: Path) -> None:
    rows = feature_rows(30, seed=4)
    write_feature_table(tmp_path / "b" / "features.parquet", list(reversed(rows)))
    write_browser(tmp_path / "b", chunk_size=8)
    index = read_index(tmp_path / "b" / "browser")
    assert index["kinds"]["features"]["feature"] == list(range(30))
    assert [r["feature"] for r in read_chunk(tmp_path / "b" / "browser", "features", 3)] == [
        24, 25, 26, 27, 28, 29]
    assert index["kinds"]["features"]["label"][3] == rows[3]["label"]


def test_non_finite_numbers_become_null_and_rounding(tmp_path: Path) -> None:
    rows = feature_rows(3, planted={0: {"interp_score": float("nan"), "density": 0.123456789},
                                    1: {"interp_score": None}})
    write_feature_table(tmp_path / "b" / "features.parquet", rows)
    write_browser(tmp_path / "b")
    features = read_index(tmp_path / "b" / "browser")["kinds"]["features"]
    assert features["interp_score"][:2] == [None, None]
    assert features["density"][0] == 0.123457  # DIGITS = 6 significant digits


def test_split_links_to_children_and_parents(bundle: Path) -> None:
    links = [{"from": "d600", "feature": 517, "to": "d4096", "children": [[3, 0.81], [77, 0.5]]},
             {"from": "d64", "feature": 9, "to": "d600", "children": [[517, 0.66], [2, 0.4]]}]
    analysis = synthetic_analysis([("d64", 64), ("d600", 600), ("d4096", 4096)], links=links)
    write_browser(bundle, report=analysis)
    browser = bundle / "browser"
    record = read_chunk(browser, "features", 2)[5]
    assert record["splits"] == {"children": [["d4096", 3, 0.81], ["d4096", 77, 0.5]],
                                "parents": [["d64", 9, 0.66]]}
    assert read_chunk(browser, "features", 0)[2]["splits"]["parents"] == [["d64", 9, 0.4]]
    dictionaries = read_index(browser)["meta"]["split_dictionaries"]
    assert [(d["id"], d["d_sae"], d["current"]) for d in dictionaries] == [
        ("d64", 64, False), ("d600", 600, True), ("d4096", 4096, False)]
    assert dictionaries[2]["href"] == "../../d4096/browser/index.html"
    assert "splits" not in read_chunk(browser, "neurons", 0)[0]


def test_analysis_found_next_to_dictionaries(bundle: Path) -> None:
    report_dir = bundle.parent.parent / "report"
    report_dir.mkdir()
    analysis = synthetic_analysis([("d600", 600), ("d4096", 4096)])
    (report_dir / "analysis.json").write_text(json.dumps(analysis))
    write_browser(bundle)
    index = read_index(bundle / "browser")
    assert index["meta"]["report_href"] == "../../../report/index.html"
    assert [m["file"] for m in index["meta"]["missing"]] == []
    assert read_chunk(bundle / "browser", "features", 0)[0]["splits"]["children"][0][:2] == [
        "d4096", 0]


def test_missing_inputs_are_named_on_the_page(tmp_path: Path) -> None:
    bundle = tmp_path / "lonely"
    bundle.mkdir()
    write_browser(bundle)
    index = read_index(bundle / "browser")
    assert [m["file"] for m in index["meta"]["missing"]] == [
        "cfg.json", "metrics.json", "analysis.json", "features.parquet", "neurons.parquet"]
    assert index["kinds"] == {}
    assert sorted(p.name for p in (bundle / "browser" / "data").iterdir()) == ["index.js"]


def test_rewrite_drops_stale_chunks(tmp_path: Path) -> None:
    write_feature_table(tmp_path / "b" / "features.parquet", feature_rows(40))
    write_browser(tmp_path / "b", chunk_size=16)
    assert (tmp_path / "b" / "browser" / "data" / "features_002.js").is_file()
    write_feature_table(tmp_path / "b" / "features.parquet", feature_rows(10))
    write_browser(tmp_path / "b", chunk_size=16)
    assert not (tmp_path / "b" / "browser" / "data" / "features_001.js").exists()


@pytest.mark.parametrize("column", ["label", "top_examples", "act_hist_counts"])
def test_missing_column_is_named(tmp_path: Path, column: str) -> None:
    assert column in REQUIRED_COLUMNS
    path = write_feature_table(tmp_path / "b" / "features.parquet", feature_rows(4))
    pl.read_parquet(path).drop(column).write_parquet(path)
    with pytest.raises(BundleError, match=rf"features\.parquet: missing column '{column}'"):
        write_browser(tmp_path / "b")


def test_bad_inputs_raise_bundle_errors(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        write_browser(tmp_path / "nope")
    path = write_feature_table(tmp_path / "b" / "features.parquet",
                               feature_rows(4, planted={3: {"feature": 1}}))
    with pytest.raises(BundleError, match="'feature' must hold unique"):
        write_browser(tmp_path / "b")
    path.write_bytes(b"not parquet")
    with pytest.raises(BundleError, match="cannot read parquet"):
        write_browser(tmp_path / "b")
    with pytest.raises(BundleError, match="analysis.json: analysis file does not exist"):
        write_browser(tmp_path / "b", report=tmp_path / "analysis.json")
    (tmp_path / "b" / "metrics.json").write_text("{oops")
    with pytest.raises(BundleError, match="metrics.json: not valid JSON"):
        write_browser(tmp_path / "b")
    with pytest.raises(BundleError, match="chunk_size=0"):
        write_browser(tmp_path / "b", chunk_size=0)


def test_malformed_split_link_is_named(bundle: Path) -> None:
    analysis = {"splits": {"dictionaries": ["d600"], "links": [{"from": "d600", "feature": 1}]}}
    with pytest.raises(BundleError, match="malformed entry in 'splits.links'"):
        write_browser(bundle, report=analysis)


def test_assets_need_no_network(bundle: Path) -> None:
    write_browser(bundle)
    browser = bundle / "browser"
    html = (browser / "index.html").read_text()
    assert re.findall(r'<script src="([^"]+)"', html) == [
        "data/index.js", "core.js", "feature.js", "app.js"]
    for name in ASSETS:
        text = (browser / name).read_text()
        assert "fetch(" not in text and "XMLHttpRequest" not in text and "import " not in text
        urls = set(re.findall(r"https?://[^\s\"')]+", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)
