"""Reading activation pools: a harvested pool directory, a plain .npy or a .safetensors file.

Every form is memory-mapped, so a pool larger than memory is read batch by batch; rows come
back as float32 [n, d_in] whatever the stored dtype (float16, bfloat16 or float32).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from featurewatch.errors import ConfigError

POOL_FILE = "pool.json"
# safetensors dtype names -> (numpy dtype, stored as bfloat16 bits?)
SAFETENSORS_DTYPES = {"F16": (np.float16, False), "F32": (np.float32, False),
                      "F64": (np.float64, False), "BF16": (np.uint16, True)}


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 values stored as uint16 bit patterns → float32 (exact)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16(values: np.ndarray) -> np.ndarray:
    """float32 → bfloat16 bit patterns as uint16, rounding to nearest even."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + 0x7FFF
    return ((bits + rounding) >> 16).astype(np.uint16)


class ActivationPool:
    """Rows of activations spread over memory-mapped shards; `pool[i:j]`, `pool[idx]`."""

    def __init__(self, shards: list[np.ndarray], *, bf16: bool = False,
                 meta: dict[str, Any] | None = None, path: Path | None = None) -> None:
        if not shards:
            raise ConfigError(f"activation pool {path}: has no shards")
        widths = {int(s.shape[1]) for s in shards}
        if len(widths) != 1:
            raise ConfigError(f"activation pool {path}: shards disagree on d_in: {sorted(widths)}")
        self.shards, self.bf16, self.path = shards, bf16, path
        self.meta = meta or {}
        self.d_in = widths.pop()
        self.offsets = np.cumsum([0] + [len(s) for s in shards])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __repr__(self) -> str:
        return f"ActivationPool(n={len(self)}, d_in={self.d_in}, shards={len(self.shards)})"

    def _convert(self, rows: np.ndarray) -> np.ndarray:
        return bf16_to_float32(rows) if self.bf16 else np.asarray(rows, dtype=np.float32)

    def _slice(self, start: int, stop: int) -> np.ndarray:
        parts = []
        for s, shard in enumerate(self.shards):
            lo, hi = max(start, self.offsets[s]), min(stop, self.offsets[s + 1])
            if lo < hi:
                parts.append(self._convert(shard[lo - self.offsets[s]: hi - self.offsets[s]]))
        if not parts:
            return np.zeros((0, self.d_in), np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _take(self, index: np.ndarray) -> np.ndarray:
        n = len(self)
        if index.size and (index.min() < -n or index.max() >= n):
            raise IndexError(f"index out of range for an activation pool of {n} rows")
        index = np.where(index < 0, index + n, index)
        out = np.empty((index.size, self.d_in), np.float32)
        shard_of = np.searchsorted(self.offsets, index, side="right") - 1
        for s in np.unique(shard_of):
            mask = shard_of == s
            local = index[mask] - self.offsets[s]
            order = np.argsort(local, kind="stable")  # sorted reads are faster on a memmap
            rows = self._convert(self.shards[s][local[order]])
            out[np.flatnonzero(mask)[order]] = rows
        return out

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return self._slice(start, stop)
            return self._take(np.arange(start, stop, step))
        if isinstance(key, (int, np.integer)):
            return self._take(np.asarray([key]))[0]
        if hasattr(key, "numpy"):  # a torch index tensor
            key = key.numpy()
        index = np.asarray(key)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return self._take(index.astype(np.int64).reshape(-1))


def _check_2d(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ConfigError(f"activation file {path}: expected shape [N, d_in], got "
                          f"{list(array.shape)}")
    return array


def _open_npy(path: Path) -> ActivationPool:
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"activation file {path}: not a readable .npy file ({exc})") from None
    if array.dtype.kind not in "fu" or (array.dtype.kind == "u" and array.dtype != np.uint16):
        raise ConfigError(f"activation file {path}: dtype {array.dtype} is not floating point")
    return ActivationPool([_check_2d(array, path)], bf16=array.dtype == np.uint16, path=path)


def _safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    with path.open("rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        if not 0 < size <= 100_000_000:
            raise ConfigError(f"activation file {path}: not a safetensors file (bad header size)")
        try:
            header = json.loads(fh.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"activation file {path}: corrupt safetensors header "
                              f"({exc})") from None
    header.pop("__metadata__", None)
    return header, 8 + size


def _open_safetensors(path: Path) -> ActivationPool:
    header, base = _safetensors_header(path)
    if not header:
        raise ConfigError(f"activation file {path}: holds no tensors")
    name = "activations" if "activations" in header else next(iter(header))
    if len(header) > 1 and name != "activations":
        raise ConfigError(f"activation file {path}: holds {sorted(header)}; name the tensor "
                          "'activations' or keep only one")
    info = header[name]
    if info.get("dtype") not in SAFETENSORS_DTYPES:
        raise ConfigError(f"activation file {path}: tensor {name!r} has dtype "
                          f"{info.get('dtype')}, expected one of {sorted(SAFETENSORS_DTYPES)}")
    dtype, bf16 = SAFETENSORS_DTYPES[info["dtype"]]
    shape = tuple(info["shape"])
    if len(shape) != 2:
        raise ConfigError(f"activation file {path}: tensor {name!r} has shape {list(shape)}, "
                          "expected [N, d_in]")
    start = base + info["data_offsets"][0]
    array = np.memmap(path, dtype=dtype, mode="r", offset=start, shape=shape)
    return ActivationPool([_check_2d(array, path)], bf16=bf16, path=path)


def _open_dir(path: Path) -> ActivationPool:
    try:
        meta = json.loads((path / POOL_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"activation pool {path}: no readable {POOL_FILE} ({exc}); run "
                          "`featurewatch train activations` first") from None
    bf16 = meta.get("dtype") == "bfloat16"
    shards = []
    for shard in meta.get("shards", []):
        file = path / shard["file"]
        try:
            array = np.load(file, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise ConfigError(f"activation pool {path}: shard {file.name} unreadable "
                              f"({exc})") from None
        if array.shape != (shard["rows"], meta["d_in"]):
            raise ConfigError(f"activation pool {path}: shard {file.name} has shape "
                              f"{list(array.shape)}, {POOL_FILE} says "
                              f"[{shard['rows']}, {meta['d_in']}]")
        shards.append(array)
    return ActivationPool(shards, bf16=bf16, meta=meta, path=path)


def open_pool(path: str | Path) -> ActivationPool:
    """An ActivationPool from a pool directory, a .npy or a .safetensors file of [N, d_in]."""
    path = Path(path)
    if path.is_dir():
        return _open_dir(path)
    if not path.is_file():
        raise ConfigError(f"activation pool {path} does not exist")
    if path.suffix == ".npy":
        return _open_npy(path)
    if path.suffix == ".safetensors":
        return _open_safetensors(path)
    raise ConfigError(f"activation pool {path}: expected a pool directory, .npy or .safetensors")
