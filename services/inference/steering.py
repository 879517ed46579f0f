"""Steering: edit feature activations inside a dictionary's reconstruction (the paper's way).

x' = x̂(edited f) + (x − x̂(f)) — `Dictionary.steer` keeps the reconstruction error, so only the
edited features change what the rest of the model sees.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from featurewatch.services.inference.domain import SteeringEdit
from featurewatch.training.dictionary import Dictionary


def position_mask(edit: SteeringEdit, positions: torch.Tensor) -> torch.Tensor:
    """Bool [T]: which of the absolute token `positions` [T] the edit applies to."""
    if edit.positions is None:
        return torch.ones(positions.shape, dtype=torch.bool)
    wanted = torch.tensor(sorted(edit.positions), dtype=positions.dtype)
    return torch.isin(positions, wanted)


def applies(edits: Sequence[SteeringEdit], positions: torch.Tensor) -> bool:
    """Whether any edit touches any of `positions` (skip steering a forward pass otherwise)."""
    return any(bool(position_mask(e, positions).any()) for e in edits)


def edit_features(f: torch.Tensor, edits: Sequence[SteeringEdit],
                  positions: torch.Tensor) -> torch.Tensor:
    """Apply `edits` in order to feature activations f [T, d_sae] at absolute `positions` [T]."""
    for edit in edits:
        rows = position_mask(edit, positions)
        column = f[rows, edit.feature]
        if edit.mode == "clamp":
            column = torch.full_like(column, edit.value)
        elif edit.mode == "add":
            column = column + edit.value
        else:
            column = column * edit.value
        f[rows, edit.feature] = column
    return f


def steer_rows(dictionary: Dictionary, x: torch.Tensor, f: torch.Tensor,
               row_edits: dict[int, Sequence[SteeringEdit]], positions: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Steer rows of a batch x [B, T, d_in] whose features are f [B, T, d_sae].

    Returns the activations to continue the forward pass with and the features after the edits
    (what the trace reports). Rows without an applicable edit are left bit-for-bit unchanged.
    """
    steered = [(r, e) for r, e in row_edits.items() if applies(e, positions[r])]
    if not steered:
        return x, f
    x, f = x.clone(), f.clone()
    for row, edits in steered:
        x_row, f_row = dictionary.steer(
            x[row], lambda feats, e=edits, p=positions[row]: edit_features(feats, e, p))
        x[row], f[row] = x_row, f_row
    return x, f
