"""2023 resampling: schedule, revived dead features, Adam state reset for exactly them."""

from __future__ import annotations

import numpy as np
import torch
from sae_data import one_thread, planted_activations  # noqa: F401 (autouse fixture)

from featurewatch.training.resample import resample_dead, resample_steps
from featurewatch.training.sae_config import SaeConfig
from featurewatch.training.sae_train import Trainer

X, _ = planted_activations(4096, d_in=16, n_directions=48, seed=0, offset=0.5)
DEAD = torch.tensor([3, 10, 40])


def _trainer(**over) -> Trainer:
    cfg = {"recipe": "relu-l1-2023", "d_sae": 64, "batch_size": 256, "steps": 200,
           "lr": 3e-3, "l1_coefficient": 0.002, "seed": 2, **over}
    return Trainer(SaeConfig(**cfg), X, None)


def _kill(trainer: Trainer) -> None:
    with torch.no_grad():
        trainer.dictionary.b_enc[DEAD] = -1e4  # never fire again by themselves


def test_schedule_is_the_papers_scaled_to_the_run() -> None:
    paper = (0.025, 0.05, 0.075, 0.1)
    assert resample_steps(1_000_000, paper) == {25_000, 50_000, 75_000, 100_000}
    assert resample_steps(2000, paper) == {50, 100, 150, 200}
    assert resample_steps(10, paper) == {1}  # steps that round to 0 are dropped


def test_resampling_sets_the_papers_weights_and_resets_adam_for_those_rows_only() -> None:
    trainer = _trainer()
    _kill(trainer)
    for _ in range(5):
        trainer.train_step(stats=False)
    d, opt = trainer.dictionary, trainer.optimizer
    dead = torch.zeros(64, dtype=torch.bool)
    dead[DEAD] = True
    live_norm = torch.linalg.vector_norm(d.W_enc.detach()[:, ~dead], dim=0).mean()
    before = {p: {k: v.clone() for k, v in opt.state[p].items()} for p in (d.W_enc, d.W_dec)}
    n = trainer._resample(dead)
    assert n == 3
    rows = torch.linalg.vector_norm(d.W_dec[DEAD], dim=1)
    assert torch.allclose(rows, torch.ones(3), atol=1e-6)
    # The decoder row is a pool row minus b_dec, normalised.
    pool = torch.from_numpy(X) - d.b_dec
    pool = pool / torch.linalg.vector_norm(pool, dim=1, keepdim=True)
    assert torch.allclose((d.W_dec[DEAD] @ pool.T).max(dim=1).values, torch.ones(3), atol=1e-5)
    enc = torch.linalg.vector_norm(d.W_enc[:, DEAD], dim=0)
    assert torch.allclose(enc, torch.full((3,), 0.2 * float(live_norm)), rtol=1e-5)
    assert torch.allclose(d.W_enc[:, DEAD].T / enc[:, None], d.W_dec[DEAD], atol=1e-6)
    assert torch.equal(d.b_enc[DEAD], torch.zeros(3))
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.count_nonzero(opt.state[d.W_dec][key][DEAD]) == 0
        assert torch.count_nonzero(opt.state[d.W_enc][key][:, DEAD]) == 0
        assert torch.count_nonzero(opt.state[d.b_enc][key][DEAD]) == 0
        keep = ~dead
        assert torch.equal(opt.state[d.W_dec][key][keep], before[d.W_dec][key][keep])
        assert torch.equal(opt.state[d.W_enc][key][:, keep], before[d.W_enc][key][:, keep])


def test_the_trainer_resamples_on_schedule_and_the_features_fire_again() -> None:
    trainer = _trainer(resample_at=(0.1,), dead_window=0.05)  # resample before step 20
    _kill(trainer)
    fired = torch.zeros(64, dtype=torch.bool)
    for _ in range(20):
        fired |= trainer.train_step(stats=False).fired
    assert not fired[DEAD].any()
    for _ in range(20):
        fired |= trainer.train_step(stats=False).fired
    assert fired[DEAD].all()


def test_inputs_are_drawn_where_the_loss_is_large() -> None:
    trainer = _trainer()
    d = trainer.dictionary
    data = np.zeros_like(X)
    data[7] = 50.0  # the only row the dictionary reconstructs badly
    with torch.no_grad():
        d.b_dec.zero_()
        d.W_dec.mul_(1e-3)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[DEAD] = True
    resample_dead(d, trainer.optimizer, dead, lambda i: torch.from_numpy(data[i]), 4096,
                  len(data), 0.0, torch.Generator().manual_seed(0))
    direction = torch.ones(16) / 4.0
    assert torch.allclose(d.W_dec[DEAD], direction.expand(3, 16), atol=1e-6)
