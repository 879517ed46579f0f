"""Synthetic activations for dictionary-training tests: known sparse directions, crashes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny matrices on a shared machine: one thread avoids idle-waiting on busy cores.

    Import it into a test module (`from sae_data import one_thread`) to apply it there.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def planted_activations(n: int, d_in: int = 64, n_directions: int = 256, active: float = 4.0,
                        seed: int = 0, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(activations [n, d_in] float32, directions [n_directions, d_in] unit rows).

    Each row is a sparse non-negative combination of the planted directions: each direction
    is active with probability active / n_directions, with an Exp(1) coefficient; `offset`
    is added to every coordinate (a mean the pre-encoder bias should absorb).
    """
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((n_directions, d_in))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    on = rng.random((n, n_directions)) < active / n_directions
    coefficients = np.where(on, rng.exponential(1.0, (n, n_directions)), 0.0)
    return (coefficients @ directions + offset).astype(np.float32), directions


def mean_max_cosine(directions: np.ndarray, decoder: np.ndarray) -> float:
    """For each planted direction, the best cosine with any decoder row; their mean."""
    rows = decoder / np.maximum(np.linalg.norm(decoder, axis=1, keepdims=True), 1e-12)
    return float((directions @ rows.T).max(axis=1).mean())


class Interrupted(Exception):
    """Raised by CrashingArray: stands for a killed training process."""


class CrashingArray:
    """An activation array that raises Interrupted on its `fail_at`-th contiguous read."""

    def __init__(self, data: np.ndarray, fail_at: int) -> None:
        self.data, self.fail_at, self.reads = data, fail_at, 0
        self.shape = data.shape

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            self.reads += 1
            if self.reads >= self.fail_at:
                raise Interrupted(f"read {self.reads}")
        return self.data[key]
