"""A tiny but real model directory and dictionary bundles for service tests (built in ~1 s).

- model: GPT-2 architecture (1 layer, n_embd 48, n_inner 128, ReLU, 2048 positions), randomly
  initialised, saved with save_pretrained next to a byte-level BPE tokenizer trained here on a
  few KB of text (PreTrainedTokenizerFast). No end-of-text token is declared, so generation only
  ends on length or stop strings (tests that need EOS set it explicitly).
- bundle `fx-mlp`: a ReLU dictionary (d_sae 256) at blocks.0.mlp.hook_post whose encoder biases
  make each feature fire on ~10% of tokens; feature DEAD_FEATURE never fires. It has metrics.json
  and a features.parquet (schema of the analysis step) with statistics measured on the text.
- bundle `fx-resid`: a dictionary (d_sae 96) at blocks.0.hook_resid_post, no features.parquet.
- bundle `fx-other`: bound to another model (the service must refuse it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from feature_tables import feature_rows, write_feature_table

MLP_ID, RESID_ID, OTHER_ID = "fx-mlp", "fx-resid", "fx-other"
D_SAE_MLP, D_SAE_RESID = 256, 96
DEAD_FEATURE = D_SAE_MLP - 1
CONTEXT = 2048
WORDS = ("the", "river", "carries", "silver", "light", "across", "quiet", "gardens", "while",
         "engines", "hum", "in", "harbor", "numbers", "and", "letters", "form", "signals",
         "market", "window", "data", "model", "feature", "value", "time", "code", "paper",
         "orbit", "cloud", "pencil", "violet", "alpha", "beta", "gamma", "delta")


@dataclass(frozen=True)
class TinyArtifacts:
    """Paths of the built fixture."""

    model_dir: Path
    mlp_bundle: Path
    resid_bundle: Path
    other_bundle: Path
    text: str


def corpus_text(n_sentences: int = 400, seed: int = 0) -> str:
    """A few KB of deterministic sentence-like text."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(n_sentences):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 12))]
        sentences.append(" ".join(words).capitalize() + rng.choice([".", ".", "!", "?"]))
    return " ".join(sentences) + " Ünïcödé çafé naïve 数据 模型 — “quotes”."


def build_tokenizer(text: str, out_dir: Path):
    """Train a byte-level BPE on `text`; save it as a PreTrainedTokenizerFast in `out_dir`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>"])
    tok.train_from_iterator([text], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=CONTEXT)
    fast.save_pretrained(out_dir)
    return fast


def build_model(vocab_size: int, out_dir: Path, seed: int = 0):
    """A random 1-layer GPT-2 saved with save_pretrained."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_positions=CONTEXT, n_embd=48, n_layer=1,
                        n_head=4, n_inner=128, activation_function="relu", resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None,
                        featurewatch_model_id="fixture-1l")
    model = GPT2LMHeadModel._from_config(config, attn_implementation="eager").eval()
    model.save_pretrained(out_dir)
    return model


def activations(model, tokenizer, text: str, hook_point: str) -> torch.Tensor:
    """Activations [n_tokens, d_in] of `text` at `hook_point` (contexts of 128 tokens)."""
    from featurewatch.training import hooks

    ids = torch.tensor(tokenizer.encode(text))
    chunks = [ids[i:i + 128] for i in range(0, len(ids) - 1, 128)]
    with torch.no_grad(), hooks.capture(model, hook_point) as store:
        for chunk in chunks:
            model(input_ids=chunk[None])
    return torch.cat([t[0] for t in store])


def sparse_dictionary(acts: torch.Tensor, d_sae: int, seed: int, dead: int | None = None):
    """A random dictionary whose encoder bias makes each feature fire on ~10% of `acts`."""
    from featurewatch.training.dictionary import Dictionary

    torch.manual_seed(seed)
    dictionary = Dictionary(acts.shape[1], d_sae)
    with torch.no_grad():
        dictionary.b_dec.copy_(acts.mean(dim=0))
        pre = dictionary.pre_activations(acts)
        dictionary.b_enc.sub_(torch.quantile(pre, 0.9, dim=0))
        if dead is not None:
            dictionary.b_enc[dead] = -1e4
    return dictionary.eval().requires_grad_(False)


def feature_table_rows(f: torch.Tensor) -> list[dict]:
    """features.parquet rows: statistics measured on f [n, d_sae], other columns synthetic."""
    density = (f > 0).float().mean(dim=0).numpy()
    max_act = f.max(dim=0).values.numpy()
    mean_act = np.where(density > 0, f.sum(dim=0).numpy() / np.maximum((f > 0).sum(0).numpy(),
                                                                          1), 0.0)
    planted = {i: {"density": float(density[i]), "max_activation": float(max_act[i]),
                   "mean_activation": float(mean_act[i])} for i in range(f.shape[1])}
    return feature_rows(f.shape[1], seed=7, planted=planted)


def build_tiny_artifacts(root: Path) -> TinyArtifacts:
    """Build the model directory and the three bundles under `root`."""
    from featurewatch.training.bundle import ModelBinding, model_binding, save_bundle

    torch.set_num_threads(1)
    root = Path(root)
    text = corpus_text()
    model_dir = root / "model"
    tokenizer = build_tokenizer(text, model_dir)
    model = build_model(len(tokenizer), model_dir)
    binding = model_binding(model_dir)
    mlp_acts = activations(model, tokenizer, text, "blocks.0.mlp.hook_post")
    mlp = sparse_dictionary(mlp_acts, D_SAE_MLP, seed=1, dead=DEAD_FEATURE)
    f = mlp.encode(mlp_acts)
    metrics = {"l0": float((f > 0).float().sum(-1).mean()), "fvu": 0.5, "loss_recovered": 0.0,
               "feature_density": (f > 0).float().mean(0).tolist()}
    mlp_dir = save_bundle(mlp, root / MLP_ID, dictionary_id=MLP_ID, binding=binding,
                          hook_point="blocks.0.mlp.hook_post", metrics=metrics)
    write_feature_table(mlp_dir / "features.parquet", feature_table_rows(f))
    resid_acts = activations(model, tokenizer, text, "blocks.0.hook_resid_post")
    resid = sparse_dictionary(resid_acts, D_SAE_RESID, seed=2)
    resid_dir = save_bundle(resid, root / RESID_ID, dictionary_id=RESID_ID, binding=binding,
                            hook_point="blocks.0.hook_resid_post")
    other_dir = save_bundle(mlp, root / OTHER_ID, dictionary_id=OTHER_ID,
                            binding=ModelBinding("another-model", "0" * 64),
                            hook_point="blocks.0.mlp.hook_post")
    return TinyArtifacts(model_dir, mlp_dir, resid_dir, other_dir, text)


_BUILT: dict[str, TinyArtifacts] = {}


def shared_tiny_artifacts(tmp_path_factory) -> TinyArtifacts:
    """Build once per pytest session (for session fixtures in any conftest)."""
    key = str(tmp_path_factory.getbasetemp())
    if key not in _BUILT:
        _BUILT[key] = build_tiny_artifacts(tmp_path_factory.mktemp("tiny-model"))
    return _BUILT[key]
