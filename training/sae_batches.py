"""Training batches drawn without replacement from a shuffled order of an activation array.

Any array-like [N, d_in] with len() and slicing works (np.ndarray, torch.Tensor, an
ActivationPool over memory-mapped shards). Each epoch reads contiguous chunks of rows in a
shuffled chunk order — a few chunks at a time, shuffled together into a window — because
contiguous reads are what a memory map serves fast. Batch i is a pure function of (seed, i),
so resuming at a step needs no data-loader state, and ranks of a distributed run can take
disjoint batches.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from featurewatch.errors import ConfigError


def as_float32(rows: Any) -> np.ndarray:
    """Rows of any supported array type as a float32 numpy array."""
    if isinstance(rows, torch.Tensor):
        return rows.detach().to("cpu", torch.float32).numpy()
    return np.asarray(rows, dtype=np.float32)


def data_width(data: Any) -> int:
    """d_in of an activation array-like (ActivationPool.d_in or shape[1])."""
    width = getattr(data, "d_in", None)
    if width is None:
        shape = getattr(data, "shape", None)
        if shape is None or len(shape) != 2:
            raise ConfigError(f"activations must be a 2-d array [N, d_in], got shape {shape}")
        width = shape[1]
    return int(width)


def sample_rows(data: Any, n: int, seed: int) -> np.ndarray:
    """`n` rows (at most all of them) chosen at random without replacement, as float32."""
    total = len(data)
    rng = np.random.default_rng([seed, 0x5A3])
    index = np.sort(rng.choice(total, size=min(n, total), replace=False))
    if isinstance(data, torch.Tensor):
        return as_float32(data[torch.from_numpy(index)])
    return as_float32(data[index])


class ShuffledBatches:
    """`batches[i]` → float32 [batch_size, d_in]; epoch e = batches e·per_epoch … (e+1)·per_epoch−1.

    Within an epoch every row appears at most once (the N mod batch_size left over are
    different rows each epoch).
    """

    def __init__(self, data: Any, batch_size: int, *, seed: int, chunk_rows: int = 8192,
                 chunks_per_window: int = 8) -> None:
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.n = len(data)
        if self.n < batch_size:
            raise ConfigError(f"sae.batch_size={batch_size} is larger than the {self.n} "
                              "activations available")
        self.per_epoch = self.n // batch_size
        self.chunk_rows = chunk_rows
        self.n_chunks = math.ceil(self.n / chunk_rows)
        self.chunks_per_window = chunks_per_window
        self._layouts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._windows: dict[tuple[int, int], np.ndarray] = {}

    def _layout(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(chunk order, window start offsets incl. the end) of one epoch."""
        if epoch not in self._layouts:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.n_chunks)
            sizes = np.minimum(self.chunk_rows, self.n - order * self.chunk_rows)
            per_window = np.add.reduceat(sizes, np.arange(0, self.n_chunks,
                                                          self.chunks_per_window))
            self._layouts = {epoch: (order, np.concatenate([[0], np.cumsum(per_window)]))}
        return self._layouts[epoch]

    def _window(self, epoch: int, w: int) -> np.ndarray:
        key = (epoch, w)
        if key not in self._windows:
            order, _ = self._layout(epoch)
            chunks = order[w * self.chunks_per_window:(w + 1) * self.chunks_per_window]
            # Read in ascending position (sequential on disk); the shuffle below mixes them.
            parts = [as_float32(self.data[c * self.chunk_rows:(c + 1) * self.chunk_rows])
                     for c in np.sort(chunks)]
            rows = np.concatenate(parts) if len(parts) > 1 else parts[0]
            perm = np.random.default_rng([self.seed, epoch, w, 1]).permutation(len(rows))
            # Keep the window being read and the next (a batch may straddle two windows).
            self._windows = {k: v for k, v in self._windows.items() if k[0] == epoch
                             and k[1] == w - 1}
            self._windows[key] = rows[perm]
        return self._windows[key]

    def __getitem__(self, index: int) -> np.ndarray:
        epoch, j = divmod(int(index), self.per_epoch)
        start, stop = j * self.batch_size, (j + 1) * self.batch_size
        _, bounds = self._layout(epoch)
        first = int(np.searchsorted(bounds, start, side="right")) - 1
        parts = []
        for w in range(first, len(bounds) - 1):
            lo, hi = int(bounds[w]), int(bounds[w + 1])
            if lo >= stop:
                break
            window = self._window(epoch, w)
            parts.append(window[max(start, lo) - lo:min(stop, hi) - lo])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
