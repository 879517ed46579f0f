"""Reading activation pools: pool dirs, .npy and .safetensors, every way of indexing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from featurewatch.errors import ConfigError
from featurewatch.training.activation_pool import (
    ActivationPool,
    bf16_to_float32,
    float32_to_bf16,
    open_pool,
)

DATA = np.random.default_rng(0).standard_normal((50, 6)).astype(np.float32)


def _pool_dir(root: Path, sizes=(20, 7, 23)) -> Path:
    root.mkdir()
    shards, start = [], 0
    for i, n in enumerate(sizes):
        np.save(root / f"shard_{i:05d}.npy", DATA[start: start + n].astype(np.float16))
        shards.append({"file": f"shard_{i:05d}.npy", "rows": n})
        start += n
    meta = {"d_in": 6, "n": start, "dtype": "float16", "shards": shards, "hook_point": "h"}
    (root / "pool.json").write_text(json.dumps(meta))
    return root


def test_pool_dir_slices_and_indexes_across_shards(tmp_path: Path) -> None:
    pool = open_pool(_pool_dir(tmp_path / "p"))
    ref = DATA.astype(np.float16).astype(np.float32)
    assert isinstance(pool, ActivationPool) and len(pool) == 50 and pool.d_in == 6
    assert pool.meta["hook_point"] == "h"
    np.testing.assert_array_equal(pool[15:30], ref[15:30])   # spans three shards
    np.testing.assert_array_equal(pool[:], ref)
    np.testing.assert_array_equal(pool[40:100], ref[40:])
    np.testing.assert_array_equal(pool[::7], ref[::7])
    idx = np.array([49, 0, 26, 20, 19, 26, -1])
    np.testing.assert_array_equal(pool[idx], ref[idx])
    np.testing.assert_array_equal(pool[torch.tensor([3, 44])], ref[[3, 44]])
    np.testing.assert_array_equal(pool[ref[:, 0] > 0], ref[ref[:, 0] > 0])
    np.testing.assert_array_equal(pool[7], ref[7])
    assert pool[10:10].shape == (0, 6)
    with pytest.raises(IndexError):
        pool[np.array([50])]


def test_npy_files_of_any_float_dtype(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", DATA)
    np.save(tmp_path / "b.npy", DATA.astype(np.float16))
    np.save(tmp_path / "c.npy", float32_to_bf16(DATA))
    np.testing.assert_array_equal(open_pool(tmp_path / "a.npy")[:], DATA)
    np.testing.assert_array_equal(open_pool(tmp_path / "b.npy")[5:9],
                                  DATA[5:9].astype(np.float16).astype(np.float32))
    bf = torch.from_numpy(DATA).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(open_pool(tmp_path / "c.npy")[:], bf)


def test_safetensors_files(tmp_path: Path) -> None:
    x = torch.from_numpy(DATA)
    save_file({"acts": x.half()}, str(tmp_path / "one.safetensors"))
    save_file({"activations": x.bfloat16(), "other": torch.zeros(3)},
              str(tmp_path / "named.safetensors"))
    save_file({"a": x, "b": x.clone()}, str(tmp_path / "two.safetensors"))
    np.testing.assert_array_equal(open_pool(tmp_path / "one.safetensors")[[1, 2]],
                                  x.half().float().numpy()[[1, 2]])
    np.testing.assert_array_equal(open_pool(tmp_path / "named.safetensors")[:],
                                  x.bfloat16().float().numpy())
    with pytest.raises(ConfigError, match="holds \\['a', 'b'\\]"):
        open_pool(tmp_path / "two.safetensors")


def test_bf16_conversion_rounds_to_nearest() -> None:
    values = np.array([1.0, 1.00390625, 1.01171875, -3.14159, 65504.0, 1e-20], np.float32)
    expected = torch.from_numpy(values).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(bf16_to_float32(float32_to_bf16(values)), expected)


def test_bad_pools_are_config_errors_naming_the_file(tmp_path: Path) -> None:
    np.save(tmp_path / "flat.npy", np.zeros(10, np.float32))
    np.save(tmp_path / "ints.npy", np.zeros((3, 4), np.int64))
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 20)
    (tmp_path / "x.txt").write_text("x")
    cases = {"flat.npy": r"expected shape \[N, d_in\], got \[10\]",
             "ints.npy": "int64 is not floating point",
             "junk.safetensors": "not a safetensors file",
             "x.txt": "expected a pool directory", "nope": "does not exist"}
    for name, message in cases.items():
        with pytest.raises(ConfigError, match=message) as info:
            open_pool(tmp_path / name)
        assert name in str(info.value)
    pool = _pool_dir(tmp_path / "p")
    np.save(pool / "shard_00001.npy", np.zeros((3, 6), np.float16))
    with pytest.raises(ConfigError, match="shard shard_00001.npy has shape \\[3, 6\\]"):
        open_pool(pool)
    (pool / "pool.json").unlink()
    with pytest.raises(ConfigError, match="no readable pool.json"):
        open_pool(pool)
