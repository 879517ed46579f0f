"""Harvesting: GPT-2, GPT-NeoX and Llama layouts; a shuffled pool mixing contexts and shards."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import save_tiny_model

from featurewatch.errors import ModelError
from featurewatch.training.activations import ActivationsConfig, harvest, open_pool
from featurewatch.training.hooks import capture
from featurewatch.training.lm import load_model

MLP_WIDTH = {"gpt2": 64, "gpt_neox": 64, "llama": 48}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {f: save_tiny_model(f, root / f) for f in MLP_WIDTH}


def _tokens(model, n: int, t: int, seed: int = 0) -> np.ndarray:
    vocab = model.get_input_embeddings().num_embeddings
    return np.random.default_rng(seed).integers(0, vocab, (n, t)).astype(np.int32)


def _captured(model, tokens: np.ndarray, hook_point: str) -> np.ndarray:
    with capture(model, hook_point) as store, torch.no_grad():
        model(input_ids=torch.from_numpy(tokens.astype(np.int64)))
    return store[0].numpy()  # [n, T, d_in]


def _sorted_rows(rows: np.ndarray) -> np.ndarray:
    return rows[np.lexsort(rows.T[::-1])]


@pytest.mark.parametrize("family", sorted(MLP_WIDTH))
def test_pool_holds_exactly_the_hooked_activations(family, models, tmp_path: Path) -> None:
    model, _ = load_model(models[family])
    tokens = _tokens(model, 12, 16)
    cfg = ActivationsConfig(hook_point="blocks.1.mlp.hook_post", n_tokens=10**6, batch_size=5)
    meta = harvest(cfg, model, tokens, tmp_path, model_info={"model_id": family})
    pool = open_pool(tmp_path)
    assert (meta["d_in"], meta["n"], len(pool), pool.d_in) == (
        MLP_WIDTH[family], 12 * 16, 12 * 16, MLP_WIDTH[family])
    assert json.loads((tmp_path / "pool.json").read_text())["model"] == {"model_id": family}
    expected = _captured(model, tokens, cfg.hook_point).reshape(-1, MLP_WIDTH[family])
    got = pool[:]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(_sorted_rows(got),
                                  _sorted_rows(expected.astype(np.float16).astype(np.float32)))
    assert not np.array_equal(got, expected.astype(np.float16).astype(np.float32))  # shuffled


@pytest.mark.parametrize("buffer_rows", [256, 10**6])  # spilled in 4 passes / all in memory
def test_tokens_are_mixed_across_contexts_and_shards(buffer_rows, models, tmp_path: Path
                                                     ) -> None:
    model, _ = load_model(models["gpt2"])
    tokens = _tokens(model, 64, 16, seed=1)
    cfg = ActivationsConfig(n_tokens=10**6, batch_size=8, buffer_rows=buffer_rows,
                            shard_rows=300)
    meta = harvest(cfg, model, tokens, tmp_path)
    assert len(meta["shards"]) == 4 and sum(s["rows"] for s in meta["shards"]) == 64 * 16
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "pool.json", *(f"shard_{i:05d}.npy" for i in range(4))]
    per_context = _captured(model, tokens, cfg.hook_point).astype(np.float16)
    origin = defaultdict(set)
    for c in range(64):
        for row in per_context[c]:
            origin[row.tobytes()].add(c)
    pool = open_pool(tmp_path)
    for s, shard in enumerate(pool.shards):
        contexts = [min(origin[np.asarray(r).tobytes()]) for r in shard]
        assert len(set(contexts[:32])) >= 16, f"shard {s}: first rows from few contexts"
        assert min(contexts) < 16 and max(contexts) >= 48, f"shard {s}: not across the run"


def test_skip_first_drops_positions_and_n_tokens_caps(models, tmp_path: Path) -> None:
    model, _ = load_model(models["llama"])
    tokens = _tokens(model, 10, 8)
    meta = harvest(ActivationsConfig(skip_first=1, n_tokens=10**6), model, tokens, tmp_path / "a")
    assert meta["n"] == 10 * 7
    first = _captured(model, tokens, "blocks.0.mlp.hook_post")[:, 0].astype(np.float16)
    rows = {r.tobytes() for r in open_pool(tmp_path / "a")[:].astype(np.float16)}
    assert not any(r.tobytes() in rows for r in first)
    meta = harvest(ActivationsConfig(n_tokens=50), model, tokens, tmp_path / "b")
    assert meta["n"] == 50 and len(open_pool(tmp_path / "b")) == 50


def test_bfloat16_pool(models, tmp_path: Path) -> None:
    model, _ = load_model(models["gpt_neox"])
    tokens = _tokens(model, 6, 8)
    cfg = ActivationsConfig(dtype="bfloat16", n_tokens=10**6, hook_point="blocks.0.hook_mlp_out")
    meta = harvest(cfg, model, tokens, tmp_path)
    assert meta["dtype"] == "bfloat16" and meta["d_in"] == 32
    expected = torch.from_numpy(_captured(model, tokens, cfg.hook_point).reshape(-1, 32))
    as_bf16 = expected.to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(_sorted_rows(open_pool(tmp_path)[:]), _sorted_rows(as_bf16))


def test_bad_tokens_and_hook_points_raise_model_error(models, tmp_path: Path) -> None:
    model, _ = load_model(models["gpt2"])
    tokens = _tokens(model, 4, 8)
    with pytest.raises(ModelError, match="outside the model's vocabulary"):
        harvest(ActivationsConfig(), model, tokens + 10_000, tmp_path)
    with pytest.raises(ModelError, match="max_position_embeddings=64"):
        harvest(ActivationsConfig(), model, np.zeros((2, 65), np.int32), tmp_path)
    with pytest.raises(ModelError, match="the model has 2 layers"):
        harvest(replace(ActivationsConfig(), hook_point="blocks.5.mlp.hook_post"), model,
                tokens, tmp_path)
