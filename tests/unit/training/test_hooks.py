"""Hook points on GPT-2, GPT-NeoX and Llama layouts: resolve, capture, attach (replacement)."""

from __future__ import annotations

import pytest
import torch
from random_lms import FAMILIES, HIDDEN, MLP_WIDTH, VOCAB, random_lm

from featurewatch.errors import ModelError
from featurewatch.training.hooks import (
    DEFAULT_HOOK_POINT,
    attach,
    capture,
    hook_point_names,
    resolve,
)

IDS = torch.randint(0, VOCAB, (3, 7), generator=torch.Generator().manual_seed(0))


def run(model, ids=IDS, **kwargs):
    with torch.no_grad():
        return model(input_ids=ids, **kwargs)


@pytest.mark.parametrize("family", FAMILIES)
def test_resolve_gives_each_hook_points_width(family: str) -> None:
    model = random_lm(family)
    assert resolve(model, DEFAULT_HOOK_POINT).d_in == MLP_WIDTH[family]
    assert resolve(model, "blocks.1.mlp.hook_post").reads_input
    for kind in ("hook_mlp_out", "hook_resid_post"):
        target = resolve(model, f"blocks.1.{kind}")
        assert target.d_in == HIDDEN and not target.reads_input
    assert hook_point_names(model) == [
        f"blocks.{i}.{k}" for i in (0, 1)
        for k in ("mlp.hook_post", "hook_mlp_out", "hook_resid_post")]


@pytest.mark.parametrize("family", FAMILIES)
def test_capture_shapes_and_values(family: str) -> None:
    model = random_lm(family)
    with capture(model, "blocks.0.mlp.hook_post") as post, \
            capture(model, "blocks.0.hook_resid_post") as resid:
        out = run(model, output_hidden_states=True)
    assert [tuple(t.shape) for t in post] == [(3, 7, MLP_WIDTH[family])]
    # The residual stream after block 0 is what HF reports as hidden state 1.
    torch.testing.assert_close(resid[0], out.hidden_states[1])
    if family == "gpt2":
        assert post[0].min() >= 0  # after the ReLU
    run(model)
    assert len(post) == 1  # the hooks are gone once the block exits


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("hook_point", ["blocks.0.mlp.hook_post", "blocks.0.hook_mlp_out",
                                        "blocks.1.hook_resid_post"])
def test_attach_replaces_activations(family: str, hook_point: str) -> None:
    model = random_lm(family, init=0.5)
    clean = run(model).logits
    seen: list[torch.Tensor] = []

    def identity(acts: torch.Tensor) -> None:
        seen.append(acts)

    with attach(model, hook_point, identity) as target:
        same = run(model).logits
    assert seen[0].shape[-1] == target.d_in
    torch.testing.assert_close(same, clean, rtol=0, atol=0)

    # Not a constant shift: LayerNorm would remove it before it reaches the logits.
    with attach(model, hook_point, lambda acts: acts + torch.linspace(-1, 1, acts.shape[-1])):
        shifted = run(model).logits
    assert (shifted - clean).abs().max() > 1e-3
    with attach(model, hook_point, lambda acts: acts.clone()):
        copied = run(model).logits
    torch.testing.assert_close(copied, clean, rtol=0, atol=0)
    torch.testing.assert_close(run(model).logits, clean, rtol=0, atol=0)  # detached again


def test_replacement_at_mlp_post_equals_editing_the_projection_input() -> None:
    """Zeroing blocks.0.mlp.hook_post is the same as zeroing the MLP's contribution."""
    model = random_lm("gpt2", init=0.5)
    mlp = model.transformer.h[0].mlp
    with attach(model, "blocks.0.mlp.hook_post", torch.zeros_like):
        zeroed = run(model).logits
    handle = mlp.register_forward_hook(lambda _m, _a, out: torch.zeros_like(out) + mlp.c_proj.bias)
    try:
        direct = run(model).logits
    finally:
        handle.remove()
    torch.testing.assert_close(zeroed, direct)


def test_hook_is_removed_when_the_block_raises() -> None:
    model = random_lm("gpt2")
    with pytest.raises(RuntimeError, match="boom"), attach(model, DEFAULT_HOOK_POINT,
                                                           torch.zeros_like):
        raise RuntimeError("boom")
    clean_again = run(model).logits
    with capture(model, DEFAULT_HOOK_POINT) as store:
        assert torch.equal(run(model).logits, clean_again)
    assert store[0].abs().sum() > 0  # real activations, not the zeros of the removed hook


@pytest.mark.parametrize("bad", ["blocks.0.mlp.hook_pre", "block.0.hook_mlp_out", "blocks.x",
                                 "", "blocks.0.hook_resid_post.extra"])
def test_unknown_hook_point_names_it(bad: str) -> None:
    with pytest.raises(ModelError, match=f"hook_point {bad!r} is not recognised"):
        resolve(random_lm("gpt2"), bad)


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_out_of_range(family: str) -> None:
    model = random_lm(family)
    with pytest.raises(ModelError, match=r"'blocks\.2\.hook_mlp_out': the model has 2 layers"):
        resolve(model, "blocks.2.hook_mlp_out")
    with pytest.raises(ModelError, match="blocks.9.mlp.hook_post"), \
            attach(model, "blocks.9.mlp.hook_post", torch.zeros_like):
        pass


def test_unsupported_model_type() -> None:
    from transformers import BertConfig, BertForMaskedLM

    model = BertForMaskedLM(BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=32))
    with pytest.raises(ModelError, match="model_type 'bert' is not supported"):
        resolve(model, DEFAULT_HOOK_POINT)
