"""Where corpus documents come from: the Python installation, or the user's own text.

The default corpus needs nothing but the interpreter that runs featurewatch: standard-library
code, its docstrings, the `pydoc_data` help topics, license texts, and CPython's test data
(which holds text in many languages and encodings). Users give a directory of text files,
a JSONL file or a Parquet file instead.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from featurewatch.errors import CorpusError
from featurewatch.training.text_decode import decode_bytes

# Category -> extensions; .py files feed both "code" and "docstrings" (disjoint files).
PROSE_EXT = {".rst", ".html", ".htm", ".md"}
TEXT_EXT = {".txt", ".json", ".xml", ".toml", ".csv", ".cfg", ".ini"}
SKIP_DIRS = {"site-packages", "__pycache__", "lib-dynload", "dist-packages"}
TOPICS_FILE = Path("pydoc_data") / "topics.py"
DOCSTRING_SHARE = 0.3  # fraction of .py files read for their docstrings rather than their code


@dataclass
class SourceText:
    """One source's documents and its identity for the manifest."""

    path: str
    sha256: str
    bytes: int
    encoding: str
    category: str
    documents: list[str] = field(default_factory=list)

    @classmethod
    def of_file(cls, path: Path, data: bytes, encoding: str, category: str,
                documents: list[str]) -> SourceText:
        """The record of `path`, whose raw content is `data`."""
        return cls(str(path), hashlib.sha256(data).hexdigest(), len(data), encoding, category,
                   documents)


@dataclass(frozen=True)
class Candidate:
    """A file that may contribute documents, read only if the byte budget reaches it."""

    path: Path
    category: str


def stdlib_dir() -> Path:
    """The standard library directory of the running interpreter."""
    return Path(sysconfig.get_paths()["stdlib"])


def _order_key(root: Path, path: Path) -> str:
    # A hash order spreads a small byte budget over the whole library, not just modules "a*".
    return hashlib.sha256(str(path.relative_to(root)).encode()).hexdigest()


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if d not in SKIP_DIRS and not d.startswith("config-"))
        for name in sorted(filenames):
            yield Path(dirpath) / name


def python_candidates(root: Path) -> dict[str, list[Candidate]]:
    """The Python installation's text files grouped by category, each in hash order."""
    groups: dict[str, list[Candidate]] = {"prose": [], "text": [], "docstrings": [], "code": []}
    for path in _walk(root):
        ext, rel = path.suffix.lower(), path.relative_to(root)
        if rel == TOPICS_FILE or path.name.startswith(("LICENSE", "COPYING")) or ext in PROSE_EXT:
            groups["prose"].append(Candidate(path, "prose"))
        elif ext in TEXT_EXT:
            groups["text"].append(Candidate(path, "text"))
        elif ext == ".py":
            share = int(_order_key(root, path)[:8], 16) / 16**8
            kind = "docstrings" if share < DOCSTRING_SHARE else "code"
            groups[kind].append(Candidate(path, kind))
    for items in groups.values():
        items.sort(key=lambda c: _order_key(root, c.path))
    return groups


def pydoc_topics(text: str) -> list[str]:
    """The help topics of pydoc_data/topics.py (a dict literal), or [] if not found."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            try:
                topics = ast.literal_eval(node.value)
            except ValueError:
                return []
            return [v for _, v in sorted(topics.items()) if isinstance(v, str)]
    return []


def docstrings(text: str) -> list[str]:
    """Module, class and function docstrings of Python source (nothing if it does not parse)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return []
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    found = [ast.get_docstring(n) for n in ast.walk(tree) if isinstance(n, kinds)]
    joined = "\n\n".join(d for d in found if d)
    return [joined] if joined else []


def read_candidate(cand: Candidate, root: Path) -> SourceText | None:
    """Decode one file into documents of its category; None if it is not text."""
    data = cand.path.read_bytes()
    decoded = decode_bytes(data, cand.path)
    if decoded is None:
        return None
    text, encoding = decoded
    if cand.category == "docstrings":
        docs = docstrings(text)
    elif cand.path.relative_to(root) == TOPICS_FILE:
        docs = pydoc_topics(text) or [text]
    else:
        docs = [text]
    return SourceText.of_file(cand.path, data, encoding, cand.category,
                              [d for d in docs if d.strip()])


def _user_files(root: Path) -> Iterator[Path]:
    for path in _walk(root):
        if not any(part.startswith(".") for part in path.relative_to(root).parts):
            yield path


def read_directory(root: Path) -> Iterator[SourceText | Path]:
    """Every file under `root` as one document; undecodable files are yielded as their Path."""
    for path in _user_files(root):
        cand = Candidate(path, "user")
        yield read_candidate(cand, root) or path


def read_jsonl(path: Path, field_name: str) -> SourceText:
    """Documents from the string field `field_name` of each JSON line of `path`."""
    data = path.read_bytes()
    docs: list[str] = []
    for lineno, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{path}:{lineno}: not valid JSON ({exc})") from None
        value = record.get(field_name) if isinstance(record, dict) else None
        if not isinstance(value, str):
            raise CorpusError(f"{path}:{lineno}: field {field_name!r} is missing or not a string "
                              "(set corpus.jsonl_field)")
        docs.append(value)
    return SourceText.of_file(path, data, "utf-8", "user", docs)


def read_parquet(path: Path, column: str) -> SourceText:
    """Documents from the string column `column` of a Parquet file (read with polars)."""
    import polars as pl

    try:
        schema = pl.read_parquet_schema(path)
    except Exception as exc:  # polars raises several unrelated types for a bad file
        raise CorpusError(f"{path}: not a readable Parquet file ({exc})") from None
    if column not in schema:
        raise CorpusError(f"{path}: no column {column!r} (set corpus.parquet_column); "
                          f"columns: {list(schema)}")
    if schema[column] not in (pl.Utf8, pl.String):
        raise CorpusError(f"{path}: column {column!r} has type {schema[column]}, not string")
    values = pl.read_parquet(path, columns=[column])[column].drop_nulls().to_list()
    data = path.read_bytes()
    return SourceText.of_file(path, data, "parquet", "user", values)
