"""Tiny randomly initialised in-memory HF causal LMs of each supported module layout.

Unlike tiny_models.py (which saves a model directory with a tokenizer), these are built in
memory in milliseconds, for tests of hooks and evaluation that only need the module layout.
"""

from __future__ import annotations

import torch

VOCAB = 64
FAMILIES = ("gpt2", "gpt_neox", "llama")
# hidden size and MLP width (= d_in of blocks.L.mlp.hook_post) per family, all different so a
# test can tell which module a hook point resolved to.
HIDDEN = 16
MLP_WIDTH = {"gpt2": 32, "gpt_neox": 40, "llama": 24}


def random_lm(family: str = "gpt2", seed: int = 0, init: float = 0.02,
              n_layers: int = 2) -> torch.nn.Module:
    """A random causal LM in eval mode (ReLU MLP for GPT-2); a larger `init` (weight std) makes
    the logits, and what an ablation costs, larger."""
    from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, LlamaConfig

    common = {"vocab_size": VOCAB, "bos_token_id": 0, "eos_token_id": 0,
              "initializer_range": init}
    width = MLP_WIDTH[family]
    if family == "gpt2":
        config = GPT2Config(n_positions=32, n_embd=HIDDEN, n_layer=n_layers, n_head=2,
                            n_inner=width, activation_function="relu", **common)
    elif family == "gpt_neox":
        config = GPTNeoXConfig(hidden_size=HIDDEN, num_hidden_layers=n_layers,
                               num_attention_heads=2, intermediate_size=width,
                               max_position_embeddings=32, **common)
    elif family == "llama":
        config = LlamaConfig(hidden_size=HIDDEN, intermediate_size=width,
                             num_hidden_layers=n_layers, num_attention_heads=2,
                             num_key_value_heads=1, max_position_embeddings=32, **common)
    else:
        raise ValueError(f"unknown family {family!r}; one of {FAMILIES}")
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()
