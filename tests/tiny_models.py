"""Tiny randomly initialised Hugging Face causal LMs saved to local directories (no download).

`save_tiny_model("gpt2" | "gpt_neox" | "llama", directory)` writes a model directory with the
same files a real one has (config.json, model.safetensors, tokenizer.json + tokenizer config),
so the code under test loads it through exactly the path it uses for real models.
"""

from __future__ import annotations

from pathlib import Path

import torch

SAMPLE_TEXT = [
    "def add(a, b):\n    return a + b\n",
    "The quick brown fox jumps over the lazy dog.",
    "Le renard brun saute par-dessus le chien paresseux. Привет, мир! こんにちは",
    "import numpy as np\nx = np.zeros((3, 4))\nprint(x.shape)\n",
] * 8


def tiny_tokenizer(directory: Path, vocab_size: int = 300):
    """A byte-level BPE (PreTrainedTokenizerFast) trained on SAMPLE_TEXT, saved to directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(SAMPLE_TEXT, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(directory)
    return fast


def _config(family: str, vocab: int):
    if family == "gpt2":
        from transformers import GPT2Config

        return GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                          n_inner=64, activation_function="relu")
    if family == "gpt_neox":
        from transformers import GPTNeoXConfig

        return GPTNeoXConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=4, intermediate_size=64,
                             max_position_embeddings=64)
    if family == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=48,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=64)
    raise ValueError(family)


def save_tiny_model(family: str, directory: Path, seed: int = 0) -> Path:
    """Save a random `family` model + tokenizer to `directory`; returns the directory."""
    from transformers import AutoModelForCausalLM

    tokenizer = tiny_tokenizer(directory)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(family, len(tokenizer)))
    model.save_pretrained(directory)
    return directory
