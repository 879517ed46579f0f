"""The tokenizer step: byte-level BPE round trips any text; token files are [n, context]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from featurewatch.errors import ConfigError, CorpusError
from featurewatch.training.corpus import CorpusConfig, build_corpus, iter_documents
from featurewatch.training.tokenizer import (
    EOS_TOKEN,
    TokenizerConfig,
    load_tokenizer,
    load_tokens,
    tokenize_corpus,
    train_tokenizer,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tok")
    src = root / "src"
    src.mkdir()
    for i in range(40):
        (src / f"{i}.txt").write_text(f"def function_{i}(x):\n    return x * {i}  # ok\n" * 5)
    out = root / "corpus"
    build_corpus(CorpusConfig(sources=(str(src),), val_fraction=0.25), out, progress=False)
    return out


def test_bpe_round_trips_any_text(corpus: Path, tmp_path: Path) -> None:
    path = train_tokenizer(TokenizerConfig(vocab_size=300), corpus, tmp_path, progress=False)
    tok = load_tokenizer(tmp_path)
    assert path.name == "tokenizer.json" and 258 <= tok.get_vocab_size() <= 300
    for text in ("def function_3(x):", "naïve Привет 日本語 🙂", "\x00\t\r\n"):
        assert tok.decode(tok.encode(text).ids) == text
    # merges learned from the corpus make its text shorter than its bytes
    assert len(tok.encode("    return x * 1").ids) < len("    return x * 1")
    assert tok.token_to_id(EOS_TOKEN) is not None


def test_token_files_are_contexts_of_the_document_stream(corpus: Path, tmp_path: Path) -> None:
    cfg = TokenizerConfig(vocab_size=300, context_size=16)
    path = train_tokenizer(cfg, corpus, tmp_path / "tokenizer", progress=False)
    stats = tokenize_corpus(cfg, corpus, path, tmp_path / "tokens", progress=False)
    train = load_tokens(tmp_path / "tokens", "train")
    val = load_tokens(tmp_path / "tokens", "val")
    assert train.dtype == np.int32 and train.shape == (stats["train_contexts"], 16)
    assert val.shape == (stats["val_contexts"], 16) and len(val) > 0
    tok = load_tokenizer(path)
    eos = tok.token_to_id(EOS_TOKEN)
    stream = []
    for doc in iter_documents(corpus, "train"):
        stream += tok.encode(doc).ids + [eos]
    assert train.reshape(-1).tolist() == stream[: train.size]
    assert len(stream) - train.size < 16  # only the tail shorter than a context is dropped


def test_too_short_split_and_bad_config(corpus: Path, tmp_path: Path) -> None:
    cfg = TokenizerConfig(vocab_size=300, context_size=100_000)
    path = train_tokenizer(cfg, corpus, tmp_path, progress=False)
    with pytest.raises(CorpusError, match="fewer than one context of tokenizer.context_size"):
        tokenize_corpus(cfg, corpus, path, tmp_path / "tokens", progress=False)
    with pytest.raises(ConfigError, match="tokenizer.vocab_size=100"):
        TokenizerConfig(vocab_size=100)
    with pytest.raises(CorpusError, match="train.npy"):
        load_tokens(tmp_path / "missing", "train")
    with pytest.raises(ConfigError, match="cannot load tokenizer"):
        load_tokenizer(tmp_path / "missing.json")
