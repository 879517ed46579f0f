"""Decoding files in many encodings: announced encodings win, binary data is refused."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from featurewatch.training.text_decode import candidate_encodings, decode_bytes, looks_binary

JAPANESE = "Python の開発は、1990 年ごろから開始されています。"


@pytest.mark.parametrize("encoding", ["shift_jis", "euc_jp", "iso2022_jp"])
def test_codec_named_by_the_file_is_used(encoding: str) -> None:
    data = JAPANESE.encode(encoding)
    assert decode_bytes(data, Path(f"{encoding}.txt")) == (JAPANESE, codecs.lookup(encoding).name)


def test_hz_is_ascii_but_decodes_as_hz() -> None:
    text = "中文 and English"
    data = text.encode("hz")
    assert data.isascii()
    assert decode_bytes(data, Path("hz.txt")) == (text, "hz")


def test_python_source_ignores_codec_named_file() -> None:
    # encodings/cp500.py is UTF-8 source, not EBCDIC text.
    data = b"# cp500 codec module\nx = 1\n"
    assert decode_bytes(data, Path("cp500.py")) == (data.decode(), "utf-8")


def test_pep263_declaration_and_bom() -> None:
    latin = "# -*- coding: latin-1 -*-\ns = 'café'\n"
    assert decode_bytes(latin.encode("latin-1"), Path("m.py")) == (latin, "iso8859-1")
    text = "hello wörld"
    assert decode_bytes(codecs.BOM_UTF8 + text.encode(), None) == (text, "utf-8-sig")
    assert decode_bytes(text.encode("utf-16"), None) == (text, "utf-16")
    assert candidate_encodings(b"abc")[-2:] == ["utf-8", "cp1252"]


def test_cp1252_fallback_and_binary_refused() -> None:
    assert decode_bytes("naïve".encode("cp1252"), Path("a.txt")) == ("naïve", "cp1252")
    assert decode_bytes(b"\x00\x01\x02PNG binary", Path("x.txt")) is None
    assert looks_binary("".join(chr(i % 8) for i in range(1000)))
    assert not looks_binary("plain\ttext\r\n\x0c")
