"""The corpus step: sources, decoding, manifest, validation split, byte cap, errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
import pytest

from featurewatch.errors import CorpusError
from featurewatch.training.corpus import (
    CorpusConfig,
    build_corpus,
    is_validation,
    iter_documents,
    read_manifest,
    split_document,
)

DOCS = [f"document number {i}: " + "lorem ipsum dolor sit amet " * (i % 7 + 1) for i in range(60)]


def _user_dir(root: Path) -> Path:
    root.mkdir()
    for i, doc in enumerate(DOCS):
        (root / f"doc{i:02d}.txt").write_text(doc, encoding="utf-8")
    (root / "sjis.txt").write_bytes("日本語のテキストです。".encode("shift_jis"))
    (root / "shift_jis.txt").write_bytes("東京と大阪".encode("shift_jis"))
    (root / "copy.txt").write_text(DOCS[0], encoding="utf-8")  # exact duplicate
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (root / ".hidden").mkdir()
    (root / ".hidden" / "secret.txt").write_text("not part of the corpus")
    return root


def _all_docs(out: Path) -> tuple[list[str], list[str]]:
    return list(iter_documents(out, "train")), list(iter_documents(out, "val"))


def test_directory_source_manifest_split_and_skips(tmp_path: Path) -> None:
    src = _user_dir(tmp_path / "src")
    cfg = CorpusConfig(sources=(str(src),), val_fraction=0.2)
    manifest = build_corpus(cfg, tmp_path / "out", progress=False)
    train, val = _all_docs(tmp_path / "out")
    assert set(DOCS) <= set(train + val)
    assert "東京と大阪" in train + val            # codec named by the file name
    assert "not part of the corpus" not in train + val
    assert all(not is_validation(d, 0.2) for d in train) and all(is_validation(d, 0.2) for d in val)
    assert 0 < len(val) < len(train)
    assert manifest["skipped_undecodable"] == 1 and manifest["undecodable"][0].endswith("png")
    assert manifest["duplicates"] == 1
    by_path = {Path(s["path"]).name: s for s in manifest["sources"]}
    raw = (src / "doc03.txt").read_bytes()
    assert by_path["doc03.txt"]["sha256"] == hashlib.sha256(raw).hexdigest()
    assert by_path["doc03.txt"]["bytes"] == len(raw) and by_path["doc03.txt"]["documents"] == 1
    assert "日本語のテキストです。" in train + val   # "sjis" is a codec alias too
    assert by_path["sjis.txt"]["encoding"] == "shift_jis"
    assert by_path["shift_jis.txt"]["encoding"] == "shift_jis"
    assert read_manifest(tmp_path / "out") == manifest
    assert manifest["splits"]["train"]["documents"] == len(train)


def test_rebuild_is_identical(tmp_path: Path) -> None:
    src = _user_dir(tmp_path / "src")
    cfg = CorpusConfig(sources=(str(src),), val_fraction=0.2, shard_bytes=500)
    first = build_corpus(cfg, tmp_path / "a", progress=False)
    second = build_corpus(cfg, tmp_path / "b", progress=False)
    assert first["splits"]["train"]["shards"] == second["splits"]["train"]["shards"]
    assert len(first["splits"]["train"]["shards"]) > 1
    assert _all_docs(tmp_path / "a") == _all_docs(tmp_path / "b")


def test_jsonl_and_parquet_sources(tmp_path: Path) -> None:
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps({"body": d, "id": i}) for i, d in enumerate(DOCS)))
    parquet = tmp_path / "docs.parquet"
    pl.DataFrame({"content": [f"parquet {d}" for d in DOCS]}).write_parquet(parquet)
    cfg = CorpusConfig(sources=(str(jsonl), str(parquet)), jsonl_field="body",
                       parquet_column="content", val_fraction=0.2)
    manifest = build_corpus(cfg, tmp_path / "out", progress=False)
    train, val = _all_docs(tmp_path / "out")
    assert set(train + val) == set(DOCS) | {f"parquet {d}" for d in DOCS}
    assert [s["documents"] for s in manifest["sources"]] == [len(DOCS), len(DOCS)]


def test_bad_jsonl_and_parquet_name_the_problem(tmp_path: Path) -> None:
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text('{"text": "ok"}\n{"other": 1}\n')
    with pytest.raises(CorpusError, match=r"docs.jsonl:2: field 'text'"):
        build_corpus(CorpusConfig(sources=(str(jsonl),)), tmp_path / "o", progress=False)
    jsonl.write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(CorpusError, match=r"docs.jsonl:2: not valid JSON"):
        build_corpus(CorpusConfig(sources=(str(jsonl),)), tmp_path / "o", progress=False)
    parquet = tmp_path / "d.parquet"
    pl.DataFrame({"body": ["x"]}).write_parquet(parquet)
    with pytest.raises(CorpusError, match=r"no column 'text'.*\['body'\]"):
        build_corpus(CorpusConfig(sources=(str(parquet),)), tmp_path / "o", progress=False)
    with pytest.raises(CorpusError, match="does not exist"):
        build_corpus(CorpusConfig(sources=(str(tmp_path / "nope"),)), tmp_path / "o",
                     progress=False)


def test_empty_corpus_says_where_it_looked(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "blob.bin").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CorpusError, match=rf"empty.*{empty}.*1 undecodable"):
        build_corpus(CorpusConfig(sources=(str(empty),)), tmp_path / "out", progress=False)


def test_max_bytes_caps_the_corpus(tmp_path: Path) -> None:
    src = _user_dir(tmp_path / "src")
    manifest = build_corpus(CorpusConfig(sources=(str(src),), max_bytes=2000, val_fraction=0.2),
                            tmp_path / "out", progress=False)
    longest = max(len(d.encode()) for d in DOCS)
    assert 2000 <= manifest["bytes"] < 2000 + longest


def test_default_corpus_mixes_python_installation_text(tmp_path: Path) -> None:
    manifest = build_corpus(CorpusConfig(max_bytes=400_000), tmp_path / "out", progress=False)
    assert set(manifest["by_category"]) == {"prose", "text", "docstrings", "code"}
    assert 400_000 <= manifest["bytes"] < 400_000 + 4 * 16_384
    # prose/text/docstrings get their shares; code takes the rest.
    assert manifest["by_category"]["code"] < 0.6 * manifest["bytes"]
    paths = [s["path"] for s in manifest["sources"]]
    assert any(p.endswith("pydoc_data/topics.py") for p in paths)
    train, val = _all_docs(tmp_path / "out")
    assert val and sum(not d.isascii() for d in train) > 0
    source = manifest["sources"][0]
    assert hashlib.sha256(Path(source["path"]).read_bytes()).hexdigest() == source["sha256"]


def test_split_document_keeps_text_and_bounds_pieces() -> None:
    text = "".join(f"line {i} " + "x" * (i % 50) + "\n" for i in range(500)) + "y" * 3000
    pieces = split_document(text, 1000)
    assert "".join(pieces) == text
    assert all(0 < len(p) <= 1000 for p in pieces)
    assert split_document("short", 1000) == ["short"]


@pytest.mark.parametrize("field,value", [("max_bytes", 0), ("val_fraction", 1.0),
                                         ("max_document_chars", 10)])
def test_config_rejects_bad_values(field: str, value) -> None:
    with pytest.raises(CorpusError, match=f"corpus.{field}"):
        CorpusConfig(**{field: value})
