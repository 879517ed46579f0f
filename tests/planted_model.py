"""A tiny GPT-2 with hand-set weights and a dictionary with planted features: known answers.

The model (vocabulary t0..t15, width 16, one layer) has one-hot token embeddings, no attention
output and an identity MLP input projection, so after the ReLU neuron j fires exactly on token
j, with activation ACT (= LayerNorm of a one-hot vector at its hot entry). Neuron 5 writes
e_9 − e_3 into the residual stream, and the unembedding is the (tied) one-hot embedding: the
direction of neuron 5 promotes t9 and suppresses t3 and nothing else.

The dictionary has FEATURES = 20 features: feature j < 16 reads neuron j, except feature 5,
which reads neuron 5 + ½ neuron 6 (so it fires at ACT on t5 and ACT/2 on t6); features 16..19
are dead. Decoder rows are the neuron basis vectors.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

VOCAB = 16
FEATURES = 20
PLANTED = 5
PROMOTED, SUPPRESSED = 9, 3
HOOK = "blocks.0.mlp.hook_post"
LN_EPS = 1e-5  # GPT2Config.layer_norm_epsilon
# LayerNorm(e_t)[t] for a one-hot vector of width 16: (1 - 1/16) / sqrt(var + eps)
ACT = (1 - 1 / VOCAB) / math.sqrt((VOCAB - 1) / VOCAB**2 + LN_EPS)


def planted_tokenizer(directory: Path):
    """A word-level tokenizer over 't0'..'t15' (whitespace-separated), saved to directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0", eos_token="t0")
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(directory)
    return fast


@torch.no_grad()
def planted_model():
    """The hand-set GPT2LMHeadModel described in the module docstring."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=VOCAB, n_layer=1, n_head=1,
                        n_inner=VOCAB, activation_function="relu", resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
                        featurewatch_model_id="planted-a")
    model = GPT2LMHeadModel(config).eval()
    model.transformer.wte.weight.copy_(torch.eye(VOCAB))
    model.transformer.wpe.weight.zero_()
    block = model.transformer.h[0]
    block.attn.c_proj.weight.zero_()
    block.attn.c_proj.bias.zero_()
    block.mlp.c_fc.weight.copy_(torch.eye(VOCAB))
    block.mlp.c_fc.bias.zero_()
    block.mlp.c_proj.weight.zero_()
    block.mlp.c_proj.bias.zero_()
    block.mlp.c_proj.weight[PLANTED, PROMOTED] = 1.0
    block.mlp.c_proj.weight[PLANTED, SUPPRESSED] = -1.0
    return model


def save_planted_model(directory: Path) -> Path:
    """Save the planted model + tokenizer as a local HF model directory."""
    planted_tokenizer(directory)
    planted_model().save_pretrained(directory)
    return directory


@torch.no_grad()
def planted_dictionary():
    """The Dictionary described in the module docstring."""
    from featurewatch.training.dictionary import Dictionary

    d = Dictionary(VOCAB, FEATURES)
    d.W_enc.zero_()
    d.W_enc[:, :VOCAB] = torch.eye(VOCAB)
    d.W_enc[PLANTED + 1, PLANTED] = 0.5
    d.b_enc.zero_()
    d.b_enc[VOCAB:] = -1.0
    d.W_dec.zero_()
    d.W_dec[:VOCAB] = torch.eye(VOCAB)
    d.W_dec[VOCAB:, 0] = 1.0
    d.b_dec.zero_()
    return d.eval().requires_grad_(False)


def save_planted_bundle(model_dir: Path, bundle_dir: Path, dictionary_id: str = "planted-20"
                        ) -> Path:
    """Save the planted dictionary as a bundle bound to the model in model_dir."""
    from featurewatch.training.bundle import model_binding, save_bundle

    return save_bundle(planted_dictionary(), bundle_dir, dictionary_id=dictionary_id,
                       binding=model_binding(model_dir), hook_point=HOOK,
                       metrics={"l0": 1.0, "loss_recovered": 1.0})


def save_planted_run(root: Path) -> tuple[Path, Path]:
    """A run layout under root: the planted model in model/, its bundle in
    dictionaries/planted-20/; returns (model dir, bundle dir)."""
    model = save_planted_model(root / "model")
    return model, save_planted_bundle(model, root / "dictionaries" / "planted-20")


def planted_tokens(n_contexts: int = 48, context_size: int = 16, seed: int = 0) -> np.ndarray:
    """Random token contexts [n, T] int32 over the 16-token vocabulary."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, VOCAB, size=(n_contexts, context_size)).astype(np.int32)


@torch.no_grad()
def planted_split_dictionary():
    """A 32-feature dictionary: features j and 16 + j both read neuron j alone, so the small
    dictionary's planted feature 5 (t5 and t6) splits into 5 and 21 (t5) and 6 and 22 (t6)."""
    from featurewatch.training.dictionary import Dictionary

    d = Dictionary(VOCAB, 2 * VOCAB)
    d.W_enc.zero_()
    d.W_enc[:, :VOCAB] = torch.eye(VOCAB)
    d.W_enc[:, VOCAB:] = torch.eye(VOCAB)
    d.b_enc.zero_()
    d.W_dec.zero_()
    d.W_dec[:VOCAB] = torch.eye(VOCAB)
    d.W_dec[VOCAB:] = torch.eye(VOCAB)
    d.b_dec.zero_()
    return d.eval().requires_grad_(False)
