"""Step 1, corpus: gather documents, split off a validation set, write shards + manifest.json.

Layout written under the corpus directory:
  train/shard_00000.jsonl ...   one {"text": ..., "source": <index into manifest sources>} a line
  val/shard_00000.jsonl ...
  manifest.json                 per source: path, sha256, bytes, documents (+ totals, skips)
A document goes to validation when the hash of its text falls below `val_fraction`, so the
split does not depend on reading order. Exact duplicate documents are kept once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from featurewatch.errors import CorpusError
from featurewatch.training import corpus_sources as src

MANIFEST_FILE = "manifest.json"
SPLITS = ("train", "val")
# How a byte budget is shared between kinds of default-corpus text; unused shares roll over
# to the kinds processed later, and code (last) takes whatever is left.
CATEGORY_SHARES = {"prose": 0.15, "text": 0.15, "docstrings": 0.2, "code": 0.5}


@dataclass(frozen=True)
class CorpusConfig:
    """Where the corpus comes from and how much of it to keep."""

    sources: tuple[str, ...] = ()
    """Directories of text files, .jsonl or .parquet files; empty = the Python installation."""
    jsonl_field: str = "text"
    """Field holding the document text in each JSONL record."""
    parquet_column: str = "text"
    """Column holding the document text in Parquet files."""
    max_bytes: int = 32_000_000
    """Stop once this many UTF-8 bytes of documents are collected."""
    val_fraction: float = 0.02
    """Fraction of documents held out for validation (chosen by hash of the text)."""
    max_document_chars: int = 16_384
    """Longer documents are split at line boundaries into pieces of at most this size."""
    shard_bytes: int = 8_000_000
    """Start a new shard file after this many bytes."""

    def __post_init__(self) -> None:
        if self.max_bytes <= 0:
            raise CorpusError(f"corpus.max_bytes={self.max_bytes} must be positive")
        if not 0.0 < self.val_fraction < 1.0:
            raise CorpusError(f"corpus.val_fraction={self.val_fraction} must be in (0, 1)")
        if self.max_document_chars < 64:
            raise CorpusError(f"corpus.max_document_chars={self.max_document_chars} must be ≥ 64")


def split_document(text: str, max_chars: int) -> list[str]:
    """Cut `text` at line ends into pieces of at most `max_chars` characters."""
    if len(text) <= max_chars:
        return [text]
    pieces: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        while len(line) > max_chars:  # a single huge line (minified JSON ...) is sliced
            pieces.extend(p for p in (current, line[:max_chars]) if p)
            current, line = "", line[max_chars:]
        if len(current) + len(line) > max_chars:
            pieces.append(current)
            current = ""
        current += line
    if current:
        pieces.append(current)
    return pieces


def is_validation(text: str, val_fraction: float) -> bool:
    """Deterministic split: the first 8 hex digits of sha256(text) as a fraction of 16**8."""
    return _digest_in_validation(hashlib.sha256(text.encode("utf-8")).digest(), val_fraction)


def _digest_in_validation(digest: bytes, val_fraction: float) -> bool:
    # The first 4 bytes of the digest are its first 8 hex digits.
    return int.from_bytes(digest[:4], "big") < val_fraction * 16**8


class _ShardWriter:
    """Appends JSON lines to numbered shard files, starting a new one past `shard_bytes`."""

    def __init__(self, directory: Path, shard_bytes: int) -> None:
        self.directory, self.shard_bytes = directory, shard_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self.shards: list[str] = []
        self.documents = self.bytes = self._in_shard = 0
        self._fh = None

    def write(self, text: str, source: int) -> int:
        """Append one document; returns its size in UTF-8 bytes."""
        if self._fh is None or self._in_shard >= self.shard_bytes:
            self.close()
            name = f"shard_{len(self.shards):05d}.jsonl"
            self.shards.append(name)
            self._fh = (self.directory / name).open("w", encoding="utf-8")
            self._in_shard = 0
        line = json.dumps({"text": text, "source": source}, ensure_ascii=False) + "\n"
        self._fh.write(line)
        n = len(text.encode("utf-8"))
        self._in_shard += n
        self.bytes += n
        self.documents += 1
        return n

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def summary(self) -> dict[str, Any]:
        return {"documents": self.documents, "bytes": self.bytes, "shards": self.shards}


class _Builder:
    """Deduplicates, splits and writes documents while tracking the byte budget."""

    def __init__(self, cfg: CorpusConfig, out_dir: Path, bar: tqdm) -> None:
        self.cfg, self.bar = cfg, bar
        self.writers = {s: _ShardWriter(out_dir / s, cfg.shard_bytes) for s in SPLITS}
        self.sources: list[dict[str, Any]] = []
        self.undecodable: list[str] = []
        self.seen: set[bytes] = set()
        self.duplicates = 0
        self.total = 0
        self.by_category: dict[str, int] = {}

    def full(self, limit: int | None = None) -> bool:
        return self.total >= min(self.cfg.max_bytes, limit if limit is not None else 1 << 62)

    def add(self, source: src.SourceText, limit: int | None = None) -> None:
        """Add a source's documents until `limit` (total bytes) or max_bytes is reached."""
        index, taken = len(self.sources), 0
        for doc in source.documents:
            for piece in split_document(doc, self.cfg.max_document_chars):
                if self.full(limit):
                    break
                digest = hashlib.sha256(piece.encode("utf-8")).digest()
                if digest in self.seen:
                    self.duplicates += 1
                    continue
                self.seen.add(digest)
                split = "val" if _digest_in_validation(digest, self.cfg.val_fraction) else "train"
                added = self.writers[split].write(piece, index)
                self.total += added
                self.by_category[source.category] = self.by_category.get(source.category, 0) + added
                self.bar.update(added)
                taken += 1
        if taken:
            record = {k: v for k, v in asdict(source).items() if k != "documents"}
            self.sources.append({**record, "documents": taken})
        self.bar.set_postfix(docs=sum(w.documents for w in self.writers.values()),
                             undecodable=len(self.undecodable), refresh=False)

    def skip(self, path: Path) -> None:
        self.undecodable.append(str(path))


def _add_python(builder: _Builder, root: Path) -> None:
    groups = src.python_candidates(root)
    remaining_share = sum(CATEGORY_SHARES.values())
    for category, share in CATEGORY_SHARES.items():
        budget_left = builder.cfg.max_bytes - builder.total
        limit = builder.total + int(budget_left * share / remaining_share)
        remaining_share -= share
        for cand in groups[category]:
            if builder.full(limit):
                break
            source = src.read_candidate(cand, root)
            if source is None:
                builder.skip(cand.path)
            else:
                builder.add(source, limit)


def _add_user_source(builder: _Builder, path: Path) -> None:
    if not path.exists():
        raise CorpusError(f"corpus source {path} does not exist")
    if path.is_dir():
        for item in src.read_directory(path):
            if builder.full():
                return
            if isinstance(item, Path):
                builder.skip(item)
            else:
                builder.add(item)
    elif path.suffix.lower() == ".jsonl":
        builder.add(src.read_jsonl(path, builder.cfg.jsonl_field))
    elif path.suffix.lower() == ".parquet":
        builder.add(src.read_parquet(path, builder.cfg.parquet_column))
    else:
        raise CorpusError(f"corpus source {path}: expected a directory, a .jsonl or a .parquet "
                          "file")


def build_corpus(cfg: CorpusConfig, out_dir: str | Path, *, progress: bool = True
                 ) -> dict[str, Any]:
    """Assemble the corpus into `out_dir`; returns (and writes) the manifest."""
    out = Path(out_dir)
    for split in SPLITS:
        shutil.rmtree(out / split, ignore_errors=True)
    looked_in = list(cfg.sources) or [str(src.stdlib_dir())]
    with tqdm(total=cfg.max_bytes, unit="B", unit_scale=True, desc="corpus",
              disable=not progress) as bar:
        builder = _Builder(cfg, out, bar)
        try:
            if cfg.sources:
                for source in cfg.sources:
                    _add_user_source(builder, Path(source))
            else:
                _add_python(builder, src.stdlib_dir())
        finally:
            for writer in builder.writers.values():
                writer.close()
    return _finish(builder, out, looked_in)


def _finish(builder: _Builder, out: Path, looked_in: list[str]) -> dict[str, Any]:
    splits = {s: w.summary() for s, w in builder.writers.items()}
    if splits["train"]["documents"] == 0:
        raise CorpusError(
            f"the corpus is empty: no text documents found in {', '.join(looked_in)} "
            f"({len(builder.undecodable)} undecodable files skipped, "
            f"{builder.duplicates} duplicates)")
    if splits["val"]["documents"] == 0:
        raise CorpusError(
            f"the validation split is empty: {splits['train']['documents']} documents from "
            f"{', '.join(looked_in)} with corpus.val_fraction={builder.cfg.val_fraction}; "
            "add text or raise val_fraction")
    manifest = {
        "version": 1,
        "config": {**asdict(builder.cfg), "sources": list(builder.cfg.sources)},
        "looked_in": looked_in,
        "bytes": builder.total,
        "by_category": builder.by_category,
        "splits": splits,
        "sources": builder.sources,
        "skipped_undecodable": len(builder.undecodable),
        "undecodable": builder.undecodable[:200],
        "duplicates": builder.duplicates,
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    return manifest


def read_manifest(corpus_dir: str | Path) -> dict[str, Any]:
    """The manifest of a built corpus; CorpusError if there is none."""
    path = Path(corpus_dir) / MANIFEST_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CorpusError(f"{path}: no readable corpus manifest ({exc}); run "
                          "`featurewatch train corpus` first") from None


def iter_documents(corpus_dir: str | Path, split: str = "train") -> Iterator[str]:
    """The documents of one split of a built corpus, in shard order."""
    if split not in SPLITS:
        raise CorpusError(f"split {split!r} must be one of {SPLITS}")
    manifest = read_manifest(corpus_dir)
    for name in manifest["splits"][split]["shards"]:
        with (Path(corpus_dir) / split / name).open(encoding="utf-8") as fh:
            for line in fh:
                yield json.loads(line)["text"]
