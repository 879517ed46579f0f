"""Token ids to streamed text: incremental detokenization and stop-string matching."""

from __future__ import annotations

REPLACEMENT = "\ufffd"
CONTEXT_TOKENS = 5  # tokens of left context kept so tokenizers that strip a leading space agree


class Detokenizer:
    """Turns a growing list of ids into text pieces whose concatenation is the decoded text.

    A byte-level token may hold part of a multi-byte character; its text is held back until the
    token that completes the character arrives (the usual prefix/read-offset scheme).
    """

    def __init__(self, tokenizer, context_ids: list[int] | tuple[int, ...] = ()) -> None:
        self.tokenizer = tokenizer
        self.ids = list(context_ids)
        self.read = len(self.ids)
        self.prefix = max(0, self.read - CONTEXT_TOKENS)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False,
                                     clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes ("" while a character is incomplete)."""
        self.ids.append(token_id)
        before = self._decode(self.ids[self.prefix:self.read])
        after = self._decode(self.ids[self.prefix:])
        if len(after) > len(before) and not after.endswith(REPLACEMENT):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before):]
        return ""


class StopMatcher:
    """Finds the first stop string completed by the text generated so far."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.longest = max((len(s) for s in stops), default=0)
        self.text = ""

    def push(self, piece: str) -> str | None:
        """Append a piece of generated text; the stop string it completes, if any."""
        if not self.stops or not piece:
            return None
        start = max(0, len(self.text) - self.longest + 1)
        self.text += piece
        window = self.text[start:]
        for stop in self.stops:
            if stop in window:
                return stop
        # Only the tail can still take part in a future match.
        self.text = self.text[-self.longest:]
        return None
