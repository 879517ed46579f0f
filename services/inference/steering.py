"""Steering: edit feature activations inside a dictionary's reconstruction (the paper's way).

x' = x̂(edited f) + (x − x̂(f)) — `Dictionary.steer` keeps the reconstruction error, so only the
edited features change what the rest of the model sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch

from featurewatch.services.inference.domain import SteeringEdit
from featurewatch.training.dictionary import Dictionary


def position_mask(edit: SteeringEdit, positions: torch.Tensor) -> torch.Tensor:
    """Bool [T]: which of the absolute token `positions` [T] the edit applies to."""
    if edit.positions is None:
        return torch.ones(positions.shape, dtype=torch.bool)
    wanted = torch.tensor(sorted(edit.positions), dtype=positions.dtype)
    return torch.isin(positions, wanted)


def edit_features(f: torch.Tensor, edits: Sequence[SteeringEdit], positions: torch.Tensor,
                  masks: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """Apply `edits` in order to feature activations f [T, d_sae] at absolute `positions` [T]
    (`masks`: their `position_mask`s, when the caller has them already)."""
    if masks is None:
        masks = [position_mask(e, positions) for e in edits]
    for edit, rows in zip(edits, masks, strict=True):
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
    steered = []
    for row, edits in row_edits.items():
        masks = [position_mask(e, positions[row]) for e in edits]  # once per edit and pass
        if any(bool(m.any()) for m in masks):
            steered.append((row, edits, masks))
    if not steered:
        return x, f
    x, f = x.clone(), f.clone()
    for row, edits, masks in steered:
        edit = partial(edit_features, edits=edits, positions=positions[row], masks=masks)
        x[row], f[row] = dictionary.steer(x[row], edit)
    return x, f
