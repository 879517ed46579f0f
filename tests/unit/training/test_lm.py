"""The lm step: the paper's one-layer model trains, saves as a HF model and loads back."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from featurewatch.errors import ConfigError, ModelError
from featurewatch.training.corpus import CorpusConfig, build_corpus
from featurewatch.training.lm import STATS_FILE, LMConfig, load_model, lr_factor, train_lm
from featurewatch.training.tokenizer import (
    TokenizerConfig,
    load_tokens,
    tokenize_corpus,
    train_tokenizer,
)

CFG = LMConfig(steps=40, batch_size=8, lr=1e-2, warmup_steps=5, eval_every=20, eval_contexts=16,
               threads=1, n_embd=32, n_inner=64, n_head=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lm")
    src = root / "src"
    src.mkdir()
    words = ["alpha", "beta", "gamma", "delta", "return", "value", "(", ")", ":"]
    rng = np.random.default_rng(0)
    for i in range(60):
        text = " ".join(words[j] for j in rng.integers(0, len(words), 200))
        (src / f"{i}.txt").write_text(f"def f{i}(x):\n    " + text)
    build_corpus(CorpusConfig(sources=(str(src),), val_fraction=0.2), root / "corpus",
                 progress=False)
    cfg = TokenizerConfig(vocab_size=300, context_size=32)
    train_tokenizer(cfg, root / "corpus", root / "tokenizer", progress=False)
    tokenize_corpus(cfg, root / "corpus", root / "tokenizer", root / "tokens", progress=False)
    return root


def _train(data: Path, out: Path, cfg: LMConfig = CFG) -> dict:
    return train_lm(cfg, load_tokens(data / "tokens", "train"), load_tokens(data / "tokens", "val"),
                    data / "tokenizer", out, progress=False)


def test_trains_saves_and_loads_as_hf_model(data: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stats = _train(data, tmp_path / "model")
    assert stats["val_loss"] < math.log(stats["vocab_size"]) - 1.0  # far better than uniform
    assert stats["curve"][-1]["val_loss"] < stats["curve"][0]["val_loss"] + 0.5
    assert stats["tokens_per_second"] > 0
    assert json.loads((tmp_path / "model" / STATS_FILE).read_text())["val_loss"] == stats["val_loss"]
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["featurewatch_model_id"] == "featurewatch-1l-a"
    assert (config["n_layer"], config["n_inner"], config["activation_function"]) == (1, 64, "relu")
    assert config["resid_pdrop"] == config["attn_pdrop"] == config["embd_pdrop"] == 0.0
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "model", local_files_only=True)
    tok = AutoTokenizer.from_pretrained(tmp_path / "model", local_files_only=True)
    model, tok2 = load_model(tmp_path / "model")
    assert not model.training and next(model.parameters()).dtype == torch.float32
    ids = torch.tensor([tok("def f1(x): return alpha")["input_ids"]])
    assert tok2("alpha beta")["input_ids"] == tok("alpha beta")["input_ids"]
    assert tok.decode(ids[0]) == "def f1(x): return alpha"
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, hf(ids).logits)


def test_same_seed_same_weights(data: Path, tmp_path: Path) -> None:
    cfg = replace(CFG, steps=5, eval_every=5)
    _train(data, tmp_path / "a", cfg)
    _train(data, tmp_path / "b", cfg)
    _train(data, tmp_path / "c", replace(cfg, seed=1))
    a, b, c = (load_model(tmp_path / n)[0].state_dict() for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_schedule_warms_up_then_decays() -> None:
    cfg = LMConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(cfg, 0) == pytest.approx(0.1) and lr_factor(cfg, 9) == pytest.approx(1.0)
    assert lr_factor(cfg, 55) == pytest.approx(0.55)  # cosine half-way: (1 + 0.1) / 2
    assert lr_factor(cfg, 100) == pytest.approx(0.1)
    assert lr_factor(replace(cfg, schedule="linear"), 55) == pytest.approx(0.55)


def test_bad_inputs_are_named(data: Path, tmp_path: Path) -> None:
    train = load_tokens(data / "tokens", "train")
    val = load_tokens(data / "tokens", "val")
    with pytest.raises(ConfigError, match="lm.batch_size=100000"):
        train_lm(replace(CFG, batch_size=100_000), train, val, data / "tokenizer", tmp_path)
    with pytest.raises(ConfigError, match="token ids reach 300 but the tokenizer has"):
        train_lm(CFG, np.full_like(train, 300), val, data / "tokenizer", tmp_path)
    with pytest.raises(ConfigError, match="lm.n_embd=30 must be divisible"):
        LMConfig(n_embd=30, n_head=4)
    with pytest.raises(ModelError, match=f"{tmp_path}: not a model directory"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "no-such-model"}')
    with pytest.raises(ModelError, match=f"{tmp_path}: cannot load"):
        load_model(tmp_path)
