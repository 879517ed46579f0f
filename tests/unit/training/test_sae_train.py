"""train_dictionary end to end: planted directions recovered, resume == uninterrupted, history."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sae_data import (  # noqa: F401 (one_thread: autouse fixture)
    CrashingArray,
    Interrupted,
    mean_max_cosine,
    one_thread,
    planted_activations,
)

from featurewatch.errors import ConfigError
from featurewatch.training.activation_pool import open_pool
from featurewatch.training.checkpoint import checkpoints
from featurewatch.training.sae_config import SaeConfig
from featurewatch.training.sae_train import train_dictionary

PLANTED, DIRECTIONS = planted_activations(60_000, d_in=64, n_directions=256, seed=0,
                                          offset=0.3)
SMALL, _ = planted_activations(4096, d_in=16, n_directions=48, seed=1, offset=0.5)


@pytest.mark.parametrize(("recipe", "extra"), [
    ("relu-l1-2024", {"l1_coefficient": 2.0}),
    ("topk", {"k": 6}),
])
def test_planted_sparse_directions_are_recovered(recipe, extra) -> None:
    cfg = SaeConfig(recipe=recipe, d_sae=512, steps=700, batch_size=512, lr=3e-3, **extra)
    trained = train_dictionary(cfg, PLANTED, progress=False)
    assert mean_max_cosine(DIRECTIONS, trained.dictionary.W_dec.numpy()) >= 0.9
    assert trained.history[-1]["fvu"] < 0.3


RESUME = {"d_sae": 32, "batch_size": 128, "steps": 60, "lr": 3e-3, "k": 4, "log_every": 5,
          "shuffle_chunk_rows": 128, "shuffle_chunks": 1, "checkpoint_every": 20,
          "resample_at": (0.9,), "dead_window": 0.1, "init_rows": 1000, "resample_rows": 2000}


@pytest.mark.parametrize("recipe", ["relu-l1-2023", "relu-l1-2024", "topk"])
def test_resume_after_interruption_equals_an_uninterrupted_run(recipe, tmp_path: Path) -> None:
    # 2023: a strong penalty on many features leaves some dead by the resampling at step 54.
    over = {"relu-l1-2023": {"l1_coefficient": 0.2, "lr": 1e-2, "d_sae": 256},
            "relu-l1-2024": {"l1_coefficient": 0.5}, "topk": {}}[recipe]
    cfg = SaeConfig(recipe=recipe, **{**RESUME, **over})
    straight = train_dictionary(cfg, SMALL, progress=False)
    # One contiguous read per step: the 46th read dies inside step 45, after the step-40
    # checkpoint; the 2023 resampling at step 54 then happens in the resumed run.
    with pytest.raises(Interrupted):
        train_dictionary(cfg, CrashingArray(SMALL, fail_at=46), checkpoint_dir=tmp_path,
                         progress=False)
    assert [p.name for p in checkpoints(tmp_path)] == ["step_000000020.pt", "step_000000040.pt"]
    resumed = train_dictionary(cfg, SMALL, checkpoint_dir=tmp_path, progress=False)
    for name, tensor in straight.dictionary.state_dict().items():
        assert torch.equal(tensor, resumed.dictionary.state_dict()[name]), name
    assert resumed.history == straight.history
    assert resumed.scaling_factor == straight.scaling_factor


def test_checkpoints_of_another_configuration_are_not_resumed(tmp_path: Path) -> None:
    cfg = SaeConfig(recipe="relu-l1-2024", **{**RESUME, "steps": 20, "checkpoint_every": 10})
    train_dictionary(cfg, SMALL, checkpoint_dir=tmp_path, progress=False)
    assert [p.name for p in checkpoints(tmp_path)] == ["step_000000010.pt", "step_000000020.pt"]
    other = SaeConfig(recipe="relu-l1-2024", **{**RESUME, "steps": 20, "seed": 5})
    fresh = train_dictionary(other, SMALL, progress=False)
    again = train_dictionary(other, SMALL, checkpoint_dir=tmp_path, progress=False)
    assert torch.equal(fresh.dictionary.W_enc, again.dictionary.W_enc)
    assert [p.name for p in checkpoints(tmp_path)] == ["step_000000020.pt"]


def test_seeds_decide_the_run() -> None:
    cfg = SaeConfig(recipe="topk", **{**RESUME, "steps": 10})
    a, b = (train_dictionary(cfg, SMALL, progress=False) for _ in range(2))
    c = train_dictionary(SaeConfig(recipe="topk", **{**RESUME, "steps": 10, "seed": 1}), SMALL,
                         progress=False)
    assert torch.equal(a.dictionary.W_dec, b.dictionary.W_dec)
    assert not torch.equal(a.dictionary.W_dec, c.dictionary.W_dec)


def test_history_traces_the_2024_schedule(tmp_path: Path) -> None:
    path = tmp_path / "acts.npy"
    np.save(path, SMALL.astype(np.float16))
    cfg = SaeConfig(recipe="relu-l1-2024", d_sae=32, batch_size=128, steps=100, lr=1e-3,
                    l1_coefficient=0.5, l1_warmup=0.2, log_every=10)
    trained = train_dictionary(cfg, open_pool(path), progress=False)
    history = trained.history
    assert [h["step"] for h in history] == list(range(10, 101, 10))
    for key in ("loss", "mse", "fvu", "l0", "dead_fraction", "lr", "l1_coefficient", "tokens"):
        assert all(np.isfinite(h[key]) for h in history), key
    assert history[0]["l1_coefficient"] == pytest.approx(0.5 * 9 / 20)  # warming up
    assert history[-1]["l1_coefficient"] == 0.5
    assert history[6]["lr"] == 1e-3 and history[-1]["lr"] == pytest.approx(1e-3 / 20)
    assert history[-1]["fvu"] < history[0]["fvu"]
    assert trained.dictionary.d_in == 16 and trained.scaling_factor > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_one_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"sae\.device='cuda'"):
        train_dictionary(SaeConfig(device="cuda", d_sae=8, batch_size=16), SMALL,
                         progress=False)


def test_too_few_activations_for_a_batch_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"sae\.batch_size=8192"):
        train_dictionary(SaeConfig(d_sae=8, batch_size=8192), SMALL, progress=False)
