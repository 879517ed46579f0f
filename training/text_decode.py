"""Turn file bytes into text, trying the encodings a file announces before guessing.

Order: a byte-order mark, a PEP 263 coding declaration, a codec named by the file name
(CPython's test data is called e.g. `big5.txt`, `euc_jp.txt`, `hz.txt`; never for .py files),
UTF-8, then cp1252.
Text that decodes but is mostly control characters is binary and is refused as well.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)
CODING_RE = re.compile(rb"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)", re.MULTILINE)
FALLBACKS = ("utf-8", "cp1252")
# Control characters other than tab/newline/carriage return/form feed/escape mark binary data.
_CONTROL = {c for c in range(32) if c not in (9, 10, 12, 13, 27)}
MAX_CONTROL_FRACTION = 0.01


def _text_codec(name: str) -> str | None:
    try:
        info = codecs.lookup(name)
    except LookupError:
        return None
    # base64, hex, rot13 ... are codecs too, but not text encodings.
    return info.name if getattr(info, "_is_text_encoding", True) else None


def candidate_encodings(data: bytes, path: Path | None = None) -> list[str]:
    """Encodings to try for `data`, most specific first, without duplicates."""
    found: list[str] = []
    for bom, name in BOMS:
        if data.startswith(bom):
            found.append(name)
            break
    head = b"\n".join(data.split(b"\n", 2)[:2])
    match = CODING_RE.search(head)
    if match and (codec := _text_codec(match.group(1).decode("ascii", "replace"))):
        found.append(codec)
    # Python source is UTF-8 unless declared (encodings/cp500.py is not EBCDIC).
    if path is not None and path.suffix != ".py" and (codec := _text_codec(path.stem)):
        found.append(codec)
    found.extend(FALLBACKS)
    return list(dict.fromkeys(found))


def looks_binary(text: str) -> bool:
    """True for decoded text that is really binary data (NUL bytes, many control chars)."""
    if "\x00" in text:
        return True
    sample = text[:65536]
    controls = sum(1 for ch in sample if ord(ch) in _CONTROL)
    return controls > MAX_CONTROL_FRACTION * max(len(sample), 1)


def decode_bytes(data: bytes, path: Path | None = None) -> tuple[str, str] | None:
    """(text, encoding) for `data`, or None if no candidate encoding yields text."""
    for encoding in candidate_encodings(data, path):
        try:
            text = data.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
        if looks_binary(text):
            return None
        return text, encoding
    return None
