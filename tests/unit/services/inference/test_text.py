"""Streamed text: pieces concatenate to the decoded text; stop strings across pieces."""

from __future__ import annotations

from transformers import AutoTokenizer

from featurewatch.services.inference.text import Detokenizer, StopMatcher


def test_pieces_concatenate_to_decoded_text_with_multibyte_characters(tiny):
    tokenizer = AutoTokenizer.from_pretrained(tiny.model_dir)
    text = "The river — “naïve” 数据 模型 carries café signals"
    ids = tokenizer.encode(text)
    detok = Detokenizer(tokenizer)
    pieces = [detok.push(i) for i in ids]
    assert "".join(pieces) == text
    assert "" in pieces  # some byte tokens only completed a character with the next token
    assert all("\ufffd" not in p for p in pieces)


def test_pieces_after_a_prompt_continue_its_text(tiny):
    tokenizer = AutoTokenizer.from_pretrained(tiny.model_dir)
    prompt, rest = tokenizer.encode("The river"), tokenizer.encode(" carries silver light")
    detok = Detokenizer(tokenizer, prompt)
    assert "".join(detok.push(i) for i in rest) == " carries silver light"


def test_stop_string_split_across_pieces():
    matcher = StopMatcher(("END", "\n\n"))
    assert [matcher.push(p) for p in ("abc E", "N", "D tail")] == [None, None, "END"]
    matcher = StopMatcher(("\n\n",))
    assert [matcher.push(p) for p in ("a\n", "\nb")] == [None, "\n\n"]


def test_no_stops_never_matches():
    matcher = StopMatcher(())
    assert matcher.push("anything END") is None
