"""Batches without replacement from a shuffled chunk order, for every array type."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from featurewatch.errors import ConfigError
from featurewatch.training.activation_pool import open_pool
from featurewatch.training.sae_batches import ShuffledBatches, data_width, sample_rows

N, D = 1000, 3
# Row r holds r in every column, so a batch says which rows it came from.
ROWS = np.repeat(np.arange(N, dtype=np.float32)[:, None], D, axis=1)


def _ids(batch: np.ndarray) -> np.ndarray:
    return batch[:, 0].astype(int)


def test_one_epoch_serves_every_row_at_most_once_in_shuffled_order() -> None:
    batches = ShuffledBatches(ROWS, 64, seed=3, chunk_rows=50, chunks_per_window=3)
    assert batches.per_epoch == N // 64
    seen = np.concatenate([_ids(batches[i]) for i in range(batches.per_epoch)])
    assert len(seen) == len(set(seen)) == batches.per_epoch * 64
    assert not np.array_equal(seen, np.sort(seen))
    # Rows of one batch come from several chunks (windows mix chunks).
    assert len(set(_ids(batches[0]) // 50)) > 1


def test_epochs_differ_and_batches_are_a_function_of_seed_and_index() -> None:
    a = ShuffledBatches(ROWS, 64, seed=3, chunk_rows=50, chunks_per_window=3)
    b = ShuffledBatches(ROWS, 64, seed=3, chunk_rows=50, chunks_per_window=3)
    per = a.per_epoch
    assert np.array_equal(a[per + 2], b[per + 2])  # random access, no history needed
    assert np.array_equal(a[5], b[5])
    assert not np.array_equal(a[0], a[per])
    c = ShuffledBatches(ROWS, 64, seed=4, chunk_rows=50, chunks_per_window=3)
    assert not np.array_equal(a[0], c[0])


def test_numpy_torch_and_pool_give_the_same_batches(tmp_path: Path) -> None:
    path = tmp_path / "acts.npy"
    np.save(path, ROWS.astype(np.float16)[:, :])
    sources = [ROWS, torch.from_numpy(ROWS), open_pool(path)]
    firsts = [ShuffledBatches(s, 32, seed=0, chunk_rows=100)[7] for s in sources]
    for batch in firsts:
        assert batch.dtype == np.float32 and batch.shape == (32, D)
        assert np.array_equal(batch, firsts[0])
    assert [data_width(s) for s in sources] == [D, D, D]


def test_sample_rows_without_replacement_for_every_array_type() -> None:
    for source in (ROWS, torch.from_numpy(ROWS)):
        rows = sample_rows(source, 100, seed=1)
        assert rows.shape == (100, D) and len(set(_ids(rows))) == 100
    assert len(sample_rows(ROWS, 5000, seed=1)) == N


def test_batch_larger_than_the_data_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"sae\.batch_size=2000"):
        ShuffledBatches(ROWS, 2000, seed=0)
    with pytest.raises(ConfigError, match="2-d"):
        data_width(np.zeros(5))
