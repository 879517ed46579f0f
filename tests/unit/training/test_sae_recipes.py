"""Recipe invariants: unit-norm decoders, gradient surgery, TopK's k, falling loss, folding."""

from __future__ import annotations

import pytest
import torch
from sae_data import one_thread, planted_activations  # noqa: F401 (autouse fixture)

from featurewatch.training.sae_config import SaeConfig
from featurewatch.training.sae_recipes import encoder_pre, remove_parallel_grad
from featurewatch.training.sae_train import Trainer

X, _ = planted_activations(4096, d_in=16, n_directions=48, seed=0, offset=0.5)
BASE = {"d_sae": 64, "batch_size": 256, "steps": 200, "k": 4, "lr": 3e-3, "log_every": 10,
        "seed": 1}
L1 = {"relu-l1-2023": 0.002, "relu-l1-2024": 0.5, "topk": None}


def _trainer(recipe: str, data=X, **over) -> Trainer:
    return Trainer(SaeConfig(recipe=recipe, l1_coefficient=L1[recipe], **{**BASE, **over}),
                   data, None)


@pytest.mark.parametrize("recipe", ["relu-l1-2023", "topk"])
def test_decoder_rows_have_unit_norm_after_every_step(recipe) -> None:
    trainer = _trainer(recipe, lr=0.05)  # a large step would visibly stretch the rows
    for _ in range(3):
        trainer.train_step(stats=False)
        norms = torch.linalg.vector_norm(trainer.dictionary.W_dec, dim=1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-6)


def test_2024_decoder_norms_are_free_and_start_small() -> None:
    trainer = _trainer("relu-l1-2024")
    norms = torch.linalg.vector_norm(trainer.dictionary.W_dec, dim=1)
    assert torch.allclose(norms, torch.full_like(norms, 0.1), atol=1e-6)
    assert torch.equal(trainer.dictionary.W_enc, trainer.dictionary.W_dec.T)
    for _ in range(5):
        trainer.train_step(stats=False)
    norms = torch.linalg.vector_norm(trainer.dictionary.W_dec, dim=1)
    assert (norms - 0.1).abs().max() > 1e-3


def test_remove_parallel_grad_leaves_only_the_perpendicular_part() -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(10, 6, generator=gen)
    w /= torch.linalg.vector_norm(w, dim=1, keepdim=True)
    w.requires_grad_(True)
    w.grad = torch.randn(10, 6, generator=gen)
    original = w.grad.clone()
    remove_parallel_grad(w)
    assert torch.allclose((w.grad * w).sum(dim=1), torch.zeros(10), atol=1e-6)
    parallel = (original * w).sum(dim=1, keepdim=True) * w
    assert torch.allclose(w.grad, original - parallel, atol=1e-6)


@pytest.mark.parametrize("recipe", ["relu-l1-2023", "topk"])
def test_trainer_removes_the_parallel_gradient_before_adam(recipe) -> None:
    trainer = _trainer(recipe)
    d, x = trainer.dictionary, torch.from_numpy(X[:256])
    out = trainer.recipe.loss(d, x, 0, torch.zeros(64, dtype=torch.bool))
    out.loss.backward()
    assert (d.W_dec.grad * d.W_dec).sum(dim=1).abs().max() > 1e-6
    trainer.recipe.before_step(d)
    assert (d.W_dec.grad * d.W_dec).sum(dim=1).abs().max() < 1e-6


def test_topk_gives_exactly_k_nonzero_features() -> None:
    trainer = _trainer("topk")
    for _ in range(20):
        trainer.train_step(stats=True)
    assert all(entry["l0"] == 4 for entry in trainer.history)
    folded = trainer.run(progress=False).dictionary
    f = folded.encode(torch.from_numpy(X[:500]))
    assert torch.equal((f != 0).sum(dim=1), torch.full((500,), 4))


def test_pre_bias_folded_into_the_encoder_bias_is_the_same_function() -> None:
    d = _trainer("relu-l1-2023").dictionary
    x = torch.from_numpy(X[:64])
    assert torch.allclose(encoder_pre(d, x, True), d.pre_activations(x), atol=1e-5)


@pytest.mark.parametrize("recipe", ["relu-l1-2023", "relu-l1-2024", "topk"])
def test_loss_falls_on_a_fixed_batch(recipe) -> None:
    fixed = X[:256]  # the whole "pool" is one batch
    trainer = _trainer(recipe, data=fixed, l1_warmup=0.0, lr_decay=0.0)
    x, no_dead = torch.from_numpy(fixed) * trainer.scale, torch.zeros(64, dtype=torch.bool)

    def loss() -> float:
        with torch.no_grad():
            return float(trainer.recipe.loss(trainer.dictionary, x, 0, no_dead).loss)

    before = loss()
    for _ in range(100):
        trainer.train_step(stats=False)
    assert loss() < 0.5 * before


@pytest.mark.parametrize("recipe", ["relu-l1-2024", "topk"])
def test_folded_dictionary_on_raw_x_equals_the_trained_one_on_scaled_x(recipe) -> None:
    trainer = _trainer(recipe, autocast=False)
    for _ in range(30):
        trainer.train_step(stats=False)
    d, s = trainer.dictionary, trainer.scale
    assert abs(s - 1.0) > 0.1  # the test data is not already at E‖x‖² = d_in
    folded = trainer.recipe.fold(d, s)
    x = torch.from_numpy(X[:300])
    with torch.no_grad():
        pre = encoder_pre(d, x * s, trainer.recipe.pre_bias)
        f = trainer.recipe.build_empty().activate(pre)
        x_hat = f @ d.W_dec + d.b_dec
        norms = torch.linalg.vector_norm(d.W_dec, dim=1)
        x_hat_folded, f_folded = folded(x)
    assert torch.allclose(x_hat_folded, x_hat / s, atol=1e-4)
    expected = f * norms / s if recipe == "relu-l1-2024" else f / s
    assert torch.allclose(f_folded, expected, atol=1e-4)
    rows = torch.linalg.vector_norm(folded.W_dec, dim=1)
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)
