"""Logit effects: the planted direction promotes exactly t9 and suppresses exactly t3."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from planted_model import (
    ACT,
    HOOK,
    PLANTED,
    PROMOTED,
    SUPPRESSED,
    planted_dictionary,
    planted_model,
    planted_tokens,
)
from tiny_models import save_tiny_model

from featurewatch.errors import ModelError
from featurewatch.training.logit_effects import final_norm_scale, logit_effects


def test_planted_feature_promotes_and_suppresses_known_tokens():
    model, d = planted_model(), planted_dictionary()
    effects = logit_effects(model, HOOK, d.W_dec, k=3, norm_scale=2.5)
    assert effects.pos_ids[PLANTED, 0] == PROMOTED
    assert effects.neg_ids[PLANTED, 0] == SUPPRESSED
    # d_5 → e9 − e3 (already centred, gain 1) → logits 2.5·(e9 − e3); median 0
    assert effects.pos_values[PLANTED, 0] == pytest.approx(2.5)
    assert effects.neg_values[PLANTED, 0] == pytest.approx(-2.5)
    assert effects.pos_values[PLANTED, 1:] == pytest.approx([0.0, 0.0])
    # every other feature writes nothing into the residual stream
    assert np.abs(np.delete(effects.pos_values, PLANTED, axis=0)).max() == pytest.approx(0.0)


def test_final_norm_scale_is_mean_inverse_std_of_the_residual():
    model, tokens = planted_model(), planted_tokens(4, 8)
    flat = tokens.reshape(-1)
    resid = np.eye(16)[flat]
    resid[flat == PLANTED] += ACT * (np.eye(16)[PROMOTED] - np.eye(16)[SUPPRESSED])
    centred = resid - resid.mean(-1, keepdims=True)
    expected = np.mean(1 / np.sqrt((centred ** 2).mean(-1) + 1e-5))
    got = final_norm_scale(model, torch.from_numpy(tokens.astype(np.int64)))
    assert got == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_other_layouts_match_the_direct_path(tmp_path, family):
    from featurewatch.training.lm import load_model

    model, _ = load_model(save_tiny_model(family, tmp_path / family))
    proj = model.model.layers[1].mlp.down_proj if family == "llama" \
        else model.gpt_neox.layers[1].mlp.dense_4h_to_h
    norm = model.model.norm if family == "llama" else model.gpt_neox.final_layer_norm
    torch.manual_seed(0)
    directions = torch.randn(5, proj.in_features)
    with torch.no_grad():
        resid = directions @ proj.weight.T
        if family == "gpt_neox":  # LayerNorm centres; RMSNorm does not
            resid = resid - resid.mean(-1, keepdim=True)
        logits = (resid * norm.weight) @ model.get_output_embeddings().weight.T
        logits -= logits.median(-1, keepdim=True).values
    effects = logit_effects(model, "blocks.1.mlp.hook_post", directions, k=4)
    np.testing.assert_allclose(effects.pos_values, logits.topk(4).values.numpy(), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_array_equal(effects.neg_ids, logits.topk(4, largest=False).indices.numpy())


def test_residual_hook_points_skip_the_mlp_projection():
    model = planted_model()
    direction = torch.zeros(1, 16)
    direction[0, PROMOTED], direction[0, SUPPRESSED] = 1.0, -1.0
    effects = logit_effects(model, "blocks.0.hook_resid_post", direction, k=1)
    assert effects.pos_ids[0, 0] == PROMOTED and effects.neg_ids[0, 0] == SUPPRESSED


def test_unknown_hook_point_or_width_is_a_model_error():
    model = planted_model()
    with pytest.raises(ModelError, match="not recognised"):
        logit_effects(model, "blocks.0.attn", torch.zeros(1, 16))
    with pytest.raises(ModelError, match="d_in=16"):
        logit_effects(model, HOOK, torch.zeros(1, 7))
