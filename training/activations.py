"""Step 4, activations: harvest a hook point of a causal LM into a shuffled on-disk pool.

The paper insists that dictionary batches mix tokens from many contexts. Harvesting does it in
two passes with bounded memory: (1) activations of `buffer_rows` tokens (many contexts) are
shuffled together and dealt out evenly to every shard's spill file; (2) each shard is loaded,
shuffled again and saved as `shard_NNNNN.npy`. Every shard thus holds tokens from the whole
run in random order. `pool.json` records d_in, n, the hook point, the model binding and dtype.
Pools are read back with `open_pool` (also for plain .npy / .safetensors files).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from featurewatch.config import check_fields
from featurewatch.errors import ConfigError, ModelError
from featurewatch.training.activation_pool import POOL_FILE, ActivationPool, open_pool
from featurewatch.training.hooks import DEFAULT_HOOK_POINT, forward_to_hook

__all__ = ["ActivationsConfig", "ActivationPool", "open_pool", "harvest", "POOL_FILE"]


@dataclass(frozen=True)
class ActivationsConfig:
    """What to harvest, how much, and how the pool is laid out on disk."""

    model_dir: str = ""
    """Local HF causal LM directory; empty = the job's own model (artifacts/model)."""
    hook_point: str = DEFAULT_HOOK_POINT
    """Where to read activations (SAELens names, e.g. blocks.0.mlp.hook_post)."""
    n_tokens: int = 2_000_000
    """Activation rows to harvest (capped by the tokens available)."""
    batch_size: int = 64
    """Contexts per forward pass."""
    buffer_rows: int = 262_144
    """Rows shuffled together in memory before being dealt out to the shards."""
    shard_rows: int = 262_144
    """Rows per shard file (about)."""
    dtype: Literal["float16", "bfloat16"] = "float16"
    """Storage dtype of the pool."""
    skip_first: int = 0
    """Positions dropped at the start of every context (e.g. 1 for a BOS token)."""
    autocast: bool = False
    """bf16 autocast for the forward pass (faster; values keep about bf16 precision)."""
    seed: int = 0
    """Seed for the choice of contexts and the shuffles."""

    def __post_init__(self) -> None:
        check_fields(self, "activations",
                     positive=("n_tokens", "batch_size", "buffer_rows", "shard_rows"),
                     non_negative=("skip_first",))


def _encode_rows(acts: torch.Tensor, dtype: str) -> np.ndarray:
    """[n, d_in] activations in the pool's storage dtype (bfloat16 as its uint16 bits)."""
    if dtype == "bfloat16":
        return acts.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    return acts.to(torch.float16).numpy()


class _Spill:
    """Shuffled buffers dealt out evenly to the shards.

    Rows collect in one preallocated buffer. When it fills, its rows are permuted and dealt
    out to per-shard spill files (pass 1); `finish` then shuffles each shard in memory and
    saves it (pass 2). If the whole pool fits in the buffer, the shards are written from it
    directly: one shuffle, no spill files.
    """

    def __init__(self, out: Path, n_rows: int, n_shards: int, cfg: ActivationsConfig,
                 rng: np.random.Generator) -> None:
        self.out, self.cfg, self.rng, self.n_shards = out, cfg, rng, n_shards
        self.capacity = min(cfg.buffer_rows, n_rows)
        self.dtype = np.uint16 if cfg.dtype == "bfloat16" else np.float16
        self.paths = [out / f"shard_{i:05d}.spill" for i in range(n_shards)]
        self.files: list = []
        self.rows = [0] * n_shards
        self.buffer: np.ndarray | None = None
        self.filled = 0

    def add(self, acts: torch.Tensor) -> None:
        encoded = _encode_rows(acts, self.cfg.dtype)
        if self.buffer is None:
            self.buffer = np.empty((self.capacity, encoded.shape[1]), self.dtype)
        while len(encoded):
            take = min(len(encoded), self.capacity - self.filled)
            self.buffer[self.filled: self.filled + take] = encoded[:take]
            self.filled, encoded = self.filled + take, encoded[take:]
            if self.filled == self.capacity and len(encoded):
                self.flush()

    def _dealt(self) -> list[np.ndarray]:
        """The buffer's row indices, permuted and split evenly between the shards."""
        return np.array_split(self.rng.permutation(self.filled), self.n_shards)

    def flush(self) -> None:
        if not self.files:
            self.files = [p.open("wb") for p in self.paths]
        for i, index in enumerate(self._dealt()):
            self.files[i].write(memoryview(self.buffer[np.sort(index)]))
            self.rows[i] += len(index)
        self.filled = 0

    def finish(self) -> list[dict[str, Any]]:
        """Write shard_NNNNN.npy files; returns their names and row counts."""
        names = [f"shard_{i:05d}.npy" for i in range(self.n_shards)]
        if not self.files:  # everything is still in the buffer
            dealt = self._dealt()
            for name, index in zip(names, dealt, strict=True):
                np.save(self.out / name, self.buffer[index])
            return [{"file": n, "rows": len(i)} for n, i in zip(names, dealt, strict=True)]
        if self.filled:
            self.flush()
        for fh in self.files:
            fh.close()
        d_in = self.buffer.shape[1]
        self.buffer = None  # free it before the shards are loaded
        shards = []
        for name, spill in zip(names, self.paths, strict=True):
            rows = np.fromfile(spill, dtype=self.dtype).reshape(-1, d_in)
            np.save(self.out / name, rows[self.rng.permutation(len(rows))])
            spill.unlink()
            shards.append({"file": name, "rows": int(len(rows))})
        return shards


def _choose_contexts(tokens: np.ndarray, cfg: ActivationsConfig,
                     rng: np.random.Generator) -> np.ndarray:
    per_context = tokens.shape[1] - cfg.skip_first
    if per_context <= 0:
        raise ConfigError(f"activations.skip_first={cfg.skip_first} leaves no positions in "
                          f"contexts of {tokens.shape[1]} tokens")
    wanted = min(len(tokens), math.ceil(cfg.n_tokens / per_context))
    return np.sort(rng.choice(len(tokens), size=wanted, replace=False))


def _clear(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("shard_*.npy"), *out.glob("shard_*.spill"), out / POOL_FILE]:
        old.unlink(missing_ok=True)


def _check_model_inputs(model, tokens: np.ndarray) -> None:
    vocab = int(model.get_input_embeddings().num_embeddings)
    top = int(tokens.max()) if tokens.size else 0
    if top >= vocab:
        raise ModelError(f"token id {top} is outside the model's vocabulary of {vocab}: the "
                         "tokens were made with another tokenizer")
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and tokens.shape[1] > limit:
        raise ModelError(f"contexts of {tokens.shape[1]} tokens exceed the model's "
                         f"max_position_embeddings={limit}")


def harvest(cfg: ActivationsConfig, model, tokens: np.ndarray, out_dir: str | Path, *,
            model_info: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Write a shuffled pool of `cfg.hook_point` activations over `tokens` [n, T] to out_dir.

    Returns the pool.json content. `model_info` (model id, weights hash, directory) is recorded
    so a dictionary trained on the pool can be bound to its model.
    """
    if tokens.ndim != 2 or len(tokens) == 0:
        raise ConfigError(f"harvest needs token contexts [n, T], got shape {list(tokens.shape)}")
    _check_model_inputs(model, tokens)
    out, rng = Path(out_dir), np.random.default_rng(cfg.seed)
    _clear(out)
    contexts = _choose_contexts(tokens, cfg, rng)
    n_rows = min(cfg.n_tokens, len(contexts) * (tokens.shape[1] - cfg.skip_first))
    spill = _Spill(out, n_rows, max(1, math.ceil(n_rows / cfg.shard_rows)), cfg, rng)
    taken, d_in, sq_norm, start = 0, 0, 0.0, time.perf_counter()
    with tqdm(total=n_rows, desc=f"activations {cfg.hook_point}", unit="tok", unit_scale=True,
              disable=not progress) as bar:
        for i in range(0, len(contexts), cfg.batch_size):
            if taken >= n_rows:
                break
            batch = torch.from_numpy(np.asarray(tokens[contexts[i: i + cfg.batch_size]],
                                                dtype=np.int64))
            acts = forward_to_hook(model, cfg.hook_point, batch, autocast=cfg.autocast)
            rows = acts[:, cfg.skip_first:].reshape(-1, acts.shape[-1])[: n_rows - taken]
            d_in = rows.shape[1]
            sq_norm += float(rows.float().square().sum(dtype=torch.float64))
            spill.add(rows)
            taken += len(rows)
            bar.update(len(rows))
            bar.set_postfix(tok_s=f"{taken / (time.perf_counter() - start):.0f}", refresh=False)
    meta = {
        "version": 1, "d_in": d_in, "n": taken, "hook_point": cfg.hook_point,
        "dtype": cfg.dtype, "shards": spill.finish(), "model": model_info or {},
        "context_size": int(tokens.shape[1]), "contexts": int(len(contexts)),
        "mean_squared_norm": sq_norm / max(taken, 1),
        "seconds": round(time.perf_counter() - start, 2), "config": asdict(cfg),
    }
    (out / POOL_FILE).write_text(json.dumps(meta, indent=2))
    return meta
