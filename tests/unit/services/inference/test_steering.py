"""Steering edits and the paper's x' = x̂(edited f) + (x − x̂(f))."""

from __future__ import annotations

import torch

from featurewatch.services.inference.domain import SteeringEdit
from featurewatch.services.inference.steering import edit_features, steer_rows
from featurewatch.training.dictionary import Dictionary


def _edit(mode, value, positions=None, feature=1):
    return SteeringEdit("d", feature, mode, value, None if positions is None
                        else frozenset(positions))


def test_clamp_add_scale_at_chosen_positions():
    f = torch.tensor([[0.0, 2.0, 1.0], [0.0, 4.0, 1.0], [0.0, 0.0, 1.0]])
    positions = torch.tensor([10, 11, 12])
    out = edit_features(f.clone(), [_edit("clamp", 7.0, {11, 12})], positions)
    assert out[:, 1].tolist() == [2.0, 7.0, 7.0]
    out = edit_features(f.clone(), [_edit("add", 1.5)], positions)
    assert out[:, 1].tolist() == [3.5, 5.5, 1.5]
    out = edit_features(f.clone(), [_edit("scale", -2.0, {10})], positions)
    assert out[:, 1].tolist() == [-4.0, 4.0, 0.0]
    assert torch.equal(out[:, [0, 2]], f[:, [0, 2]])


def test_steer_rows_keeps_reconstruction_error_and_leaves_other_rows_alone():
    torch.manual_seed(0)
    dictionary = Dictionary(8, 16).eval().requires_grad_(False)
    x = torch.randn(3, 2, 8)
    f = dictionary.encode(x)
    positions = torch.tensor([[0, 1], [0, 1], [0, 1]])
    edit = _edit("clamp", 5.0, {1}, feature=3)
    out, f_out = steer_rows(dictionary, x, f, {1: [edit]}, positions)
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[2])
    assert torch.equal(f_out[0], f[0]) and torch.equal(f_out[2], f[2])
    assert f_out[1, 1, 3] == 5.0
    # only the edited feature's decoder direction was added: x' − x = Δf · W_dec
    delta = (5.0 - f[1, 1, 3]) * dictionary.W_dec[3]
    assert torch.allclose(out[1, 1] - x[1, 1], delta, atol=1e-5)
    assert torch.allclose(out[1, 0], x[1, 0], atol=1e-5)  # position 0 not steered


def test_edit_at_absent_position_changes_nothing():
    torch.manual_seed(1)
    dictionary = Dictionary(8, 16).eval().requires_grad_(False)
    x = torch.randn(1, 1, 8)
    f = dictionary.encode(x)
    out, f_out = steer_rows(dictionary, x, f, {0: [_edit("clamp", 9.0, {5})]},
                            torch.tensor([[2]]))
    assert out is x and f_out is f
