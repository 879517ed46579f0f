"""Dead-feature resampling of the 2023 recipe [TM], with the Adam state reset it requires.

At the scheduled steps, features that did not fire during the dead window are re-pointed at
inputs the dictionary reconstructs badly: the loss is computed on a random sample of
activations, inputs are drawn with probability ∝ loss², and each dead feature gets
  decoder row  = the input, unit-normalised,
  encoder col  = the input scaled to 0.2 × the mean encoder norm of the live features,
  encoder bias = 0,
and Adam's moment estimates of exactly those rows/columns are zeroed (stale moments would
immediately push the new directions back).

"The input" is taken as the encoder sees it, x − b_dec: the decoder writes on top of b_dec,
so the part of a badly reconstructed input that a new feature must supply is x − b_dec.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np
import torch

from featurewatch.training.dictionary import Dictionary
from featurewatch.training.sae_recipes import encoder_pre

ENCODER_SCALE = 0.2


def resample_steps(steps: int, fractions: tuple[float, ...]) -> set[int]:
    """Steps (0-based, before which resampling happens) for `fractions` of a run."""
    return {round(f * steps) for f in fractions if round(f * steps) >= 1}


@torch.no_grad()
def row_losses(d: Dictionary, x: torch.Tensor, l1_coefficient: float) -> torch.Tensor:
    """Per-row 2023 loss: MSE (mean over elements) + λ‖f‖₁, float32 [n]."""
    f = torch.relu(encoder_pre(d, x, True))
    err = torch.addmm(d.b_dec, f, d.W_dec).float() - x
    return err.pow(2).mean(dim=1) + l1_coefficient * f.sum(dim=1, dtype=torch.float32)


def reset_adam_state(optimizer: torch.optim.Optimizer, param: torch.Tensor,
                     index: torch.Tensor, dim: int) -> None:
    """Zero Adam's exp_avg and exp_avg_sq of `param` at `index` along `dim`."""
    state = optimizer.state.get(param, {})
    for key in ("exp_avg", "exp_avg_sq"):
        if key in state:
            state[key].index_fill_(dim, index, 0.0)


@torch.no_grad()
def resample_dead(d: Dictionary, optimizer: torch.optim.Optimizer, dead: torch.Tensor,
                  read_rows: Callable[[np.ndarray], torch.Tensor], n_rows: int, n_total: int,
                  l1_coefficient: float, gen: torch.Generator, chunk: int = 8192,
                  autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext
                  ) -> int:
    """Resample the features where `dead` [d_sae] is True; returns how many were resampled.

    `read_rows(index)` returns activations (training units, on the device) for sorted row
    indices of the pool of `n_total` rows; the loss is computed on `n_rows` of them.
    """
    dead_idx = dead.nonzero().squeeze(1)
    if dead_idx.numel() == 0:
        return 0
    n_rows = min(n_rows, n_total)
    index = torch.randperm(n_total, generator=gen)[:n_rows].sort().values.numpy()
    losses = []
    for start in range(0, n_rows, chunk):
        x = read_rows(index[start:start + chunk])
        with autocast():
            losses.append(row_losses(d, x, l1_coefficient).cpu())
    weights = torch.cat(losses).double().pow(2)
    if not bool((weights > 0).any()):
        weights = torch.ones_like(weights)
    replace = dead_idx.numel() > int((weights > 0).sum())
    chosen = torch.multinomial(weights, dead_idx.numel(), replacement=replace, generator=gen)
    inputs = read_rows(np.sort(index[chosen.numpy()])) - d.b_dec
    inputs = inputs / torch.linalg.vector_norm(inputs, dim=1, keepdim=True).clamp_min(1e-12)
    alive = ~dead
    enc_norm = (torch.linalg.vector_norm(d.W_enc[:, alive], dim=0).mean()
                if bool(alive.any()) else torch.tensor(1.0, device=inputs.device))
    d.W_dec[dead_idx] = inputs
    d.W_enc[:, dead_idx] = (inputs * (ENCODER_SCALE * enc_norm)).T
    d.b_enc[dead_idx] = 0.0
    reset_adam_state(optimizer, d.W_dec, dead_idx, 0)
    reset_adam_state(optimizer, d.W_enc, dead_idx, 1)
    reset_adam_state(optimizer, d.b_enc, dead_idx, 0)
    return int(dead_idx.numel())
