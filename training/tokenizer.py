"""Step 2, tokenizer: train a byte-level BPE on the corpus and cut it into token contexts.

Writes `tokenizer/tokenizer.json` (the `tokenizers` library's format, loadable by
`PreTrainedTokenizerFast(tokenizer_file=...)`) and `tokens/{train,val}.npy`: int32
[n_contexts, context_size]. Documents are joined with the end-of-text token and the stream is
cut into consecutive contexts, as GPT-2-style training does; the tail shorter than one context
is dropped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from featurewatch.errors import ConfigError, CorpusError
from featurewatch.training.corpus import iter_documents, read_manifest

TOKENIZER_FILE = "tokenizer.json"
EOS_TOKEN = "<|endoftext|>"
ENCODE_BATCH = 256  # documents per encode_batch call (tokenizers parallelises inside a batch)


@dataclass(frozen=True)
class TokenizerConfig:
    """Byte-level BPE vocabulary and the context length of the token files."""

    vocab_size: int = 4096
    """Vocabulary size including the 256 byte tokens and the end-of-text token."""
    min_frequency: int = 2
    """A pair must occur this often to be merged."""
    context_size: int = 128
    """Tokens per context in tokens/*.npy (the paper used 250)."""
    max_train_bytes: int = 0
    """Train the BPE on at most this many corpus bytes (0 = the whole training split)."""

    def __post_init__(self) -> None:
        if self.vocab_size < 258:
            raise ConfigError(f"tokenizer.vocab_size={self.vocab_size} must be ≥ 258 "
                              "(256 bytes + end-of-text + one merge)")
        if self.context_size < 2:
            raise ConfigError(f"tokenizer.context_size={self.context_size} must be ≥ 2")
        if self.max_train_bytes < 0:
            raise ConfigError(f"tokenizer.max_train_bytes={self.max_train_bytes} must be ≥ 0")


def _limited(docs, max_bytes: int):
    total = 0
    for doc in docs:
        yield doc
        total += len(doc)
        if max_bytes and total >= max_bytes:
            return


def train_tokenizer(cfg: TokenizerConfig, corpus_dir: str | Path, out_dir: str | Path, *,
                    progress: bool = True) -> Path:
    """Train byte-level BPE on the corpus's training split; returns the tokenizer.json path."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    manifest = read_manifest(corpus_dir)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency, show_progress=progress,
        special_tokens=[EOS_TOKEN], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    docs = _limited(iter_documents(corpus_dir, "train"), cfg.max_train_bytes)
    tokenizer.train_from_iterator(docs, trainer,
                                  length=manifest["splits"]["train"]["documents"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / TOKENIZER_FILE))
    return out / TOKENIZER_FILE


def tokenizer_file(path: str | Path) -> Path:
    """`path` itself, or the tokenizer.json inside it when it is a directory."""
    path = Path(path)
    return path / TOKENIZER_FILE if path.is_dir() else path


def load_tokenizer(path: str | Path):
    """A `tokenizers.Tokenizer` from a tokenizer.json file or a directory holding one."""
    from tokenizers import Tokenizer

    file = tokenizer_file(path)
    try:
        return Tokenizer.from_file(str(file))
    except Exception as exc:  # the Rust side raises a bare Exception
        raise ConfigError(f"{file}: cannot load tokenizer ({exc})") from None


def encode_split(tokenizer, corpus_dir: str | Path, split: str, context_size: int, *,
                 eos_id: int | None = None, progress: bool = True) -> np.ndarray:
    """The split's documents as int32 [n_contexts, context_size], each ending with `eos_id`.

    `tokenizer` is a `tokenizers.Tokenizer` (for a HF tokenizer pass its backend_tokenizer);
    `eos_id` defaults to the id of <|endoftext|>; with no such token documents are just joined.
    """
    eos = tokenizer.token_to_id(EOS_TOKEN) if eos_id is None else eos_id
    tail = [] if eos is None else [eos]
    chunks: list[np.ndarray] = []
    batch: list[str] = []
    total_docs = read_manifest(corpus_dir)["splits"][split]["documents"]
    with tqdm(total=total_docs, desc=f"tokens/{split}", unit="doc", disable=not progress) as bar:
        def flush() -> None:
            for enc in tokenizer.encode_batch(batch, add_special_tokens=False):
                chunks.append(np.asarray(enc.ids + tail, dtype=np.int32))
            bar.update(len(batch))
            batch.clear()

        for doc in iter_documents(corpus_dir, split):
            batch.append(doc)
            if len(batch) >= ENCODE_BATCH:
                flush()
        flush()
    stream = np.concatenate(chunks) if chunks else np.zeros(0, np.int32)
    n = len(stream) // context_size
    if n == 0:
        raise CorpusError(f"{corpus_dir}: the {split} split has {len(stream)} tokens, fewer than "
                          f"one context of tokenizer.context_size={context_size}")
    return stream[: n * context_size].reshape(n, context_size)


def tokenize_corpus(cfg: TokenizerConfig, corpus_dir: str | Path, tokenizer_path: str | Path,
                    tokens_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Write tokens/train.npy and tokens/val.npy; returns counts (also in tokens/stats.json)."""
    tokenizer = load_tokenizer(tokenizer_path)
    splits = read_manifest(corpus_dir)["splits"]
    out = Path(tokens_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    stats: dict[str, Any] = {"context_size": cfg.context_size,
                             "vocab_size": tokenizer.get_vocab_size()}
    corpus_bytes = 0
    for split in ("train", "val"):
        tokens = encode_split(tokenizer, corpus_dir, split, cfg.context_size, progress=progress)
        np.save(out / f"{split}.npy", tokens)
        stats[f"{split}_contexts"] = int(tokens.shape[0])
        stats[f"{split}_tokens"] = int(tokens.size)
        corpus_bytes += splits[split]["bytes"]
    total = stats["train_tokens"] + stats["val_tokens"]
    stats["bytes_per_token"] = round(corpus_bytes / max(total, 1), 3)
    stats["seconds"] = round(time.perf_counter() - start, 2)
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats


def load_tokens(tokens_dir: str | Path, split: str) -> np.ndarray:
    """tokens/<split>.npy as int32 [n_contexts, context_size]; CorpusError if missing/bad."""
    path = Path(tokens_dir) / f"{split}.npy"
    try:
        tokens = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise CorpusError(f"{path}: cannot read token file ({exc}); run "
                          "`featurewatch train tokenizer` first") from None
    if tokens.ndim != 2 or tokens.dtype != np.int32:
        raise CorpusError(f"{path}: expected int32 [n_contexts, context_size], got "
                          f"{tokens.dtype} {list(tokens.shape)}")
    return tokens
