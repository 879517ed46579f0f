"""Encoding at the hook points equals encoding captured activations with the dictionary."""

from __future__ import annotations

import torch
from fixtures_model import MLP_ID, RESID_ID

from featurewatch.services.inference.domain import SteeringEdit
from featurewatch.services.inference.passes import Encoder, HookRouter, PassPlan
from featurewatch.training import hooks


def test_encoder_matches_dictionary_encode_dense_and_sparse(runtime):
    torch.manual_seed(0)
    dictionary = runtime.dictionaries[MLP_ID].dictionary
    dense = torch.randn(5, 3, dictionary.d_in)
    sparse = torch.relu(dense) * (torch.rand_like(dense) < 0.2)
    one_row = sparse[:1, :1]  # a decode step: 20% non-zero, under the sparse path's 35%
    small, forced = Encoder(dictionary), Encoder(dictionary, sparse_min_weights=0)
    assert not small.may_sparse and forced.may_sparse  # the fixture's W_enc is small
    flat = [x.reshape(-1, dictionary.d_in) for x in (dense, sparse, one_row, dense[:1, :1])]
    assert [forced.sparse_columns(x) is not None for x in flat] == [False, False, True, False]
    assert torch.equal(forced.sparse_columns(flat[2]), torch.nonzero(flat[2][0]).squeeze(1))
    assert small.sparse_columns(flat[2]) is None
    with torch.inference_mode():
        for x in (dense, sparse, one_row):
            for encoder in (small, forced):
                assert torch.allclose(encoder(x), dictionary.encode(x), atol=1e-5)


def test_router_features_equal_captured_activations_encoded(runtime):
    model = runtime.model
    ids = torch.tensor([[5, 17, 99, 230, 42, 7]])
    router = HookRouter(list(runtime.dictionaries.values()))
    plan = PassPlan(positions=torch.arange(6)[None])
    with torch.inference_mode():
        with router.install(model):
            logits = router.run(plan, model, input_ids=ids).logits
        with hooks.capture(model, "blocks.0.mlp.hook_post") as mlp, \
                hooks.capture(model, "blocks.0.hook_resid_post") as resid:
            plain = model(input_ids=ids).logits
    assert torch.equal(logits, plain)  # observing does not change the model
    for dictionary_id, captured in ((MLP_ID, mlp[0]), (RESID_ID, resid[0])):
        expected = runtime.dictionaries[dictionary_id].dictionary.encode(captured)
        assert torch.allclose(plan.features[dictionary_id], expected, atol=1e-5)


def test_no_plan_leaves_hooks_inert(runtime):
    router = HookRouter(list(runtime.dictionaries.values()))
    with torch.inference_mode(), router.install(runtime.model):
        out = runtime.model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert router.plan is None and out.shape[-1] == runtime.vocab_size


def test_a_pass_that_only_steers_encodes_only_the_steered_dictionary(runtime):
    router = HookRouter(list(runtime.dictionaries.values()))
    edit = SteeringEdit(MLP_ID, 0, "add", 3.0)
    plan = PassPlan(positions=torch.arange(3)[None], trace=False, edits={MLP_ID: {0: [edit]}})
    with torch.inference_mode(), router.install(runtime.model):
        router.run(plan, runtime.model, input_ids=torch.tensor([[1, 2, 3]]))
    assert set(plan.features) == {MLP_ID} and float(plan.features[MLP_ID][0, :, 0].min()) >= 3.0
