"""Step 3, lm: the paper's one-layer transformer as a Hugging Face GPT-2 causal LM.

The model is built from a `GPT2Config` (nothing is downloaded), trained on CPU with bf16
autocast, AdamW and a warm-up + cosine (or linear) schedule, and saved with `save_pretrained`
together with its tokenizer, so any Hugging Face tool loads the directory. `load_model` loads
this model or any other local HF causal LM directory the same way.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from featurewatch.config import check_fields
from featurewatch.errors import ConfigError, ModelError

STATS_FILE = "train_stats.json"


@dataclass(frozen=True)
class LMConfig:
    """Architecture and optimisation of the default language model."""

    model_id: str = "featurewatch-1l-a"
    """Identity written to config.json as featurewatch_model_id (bundles bind to it)."""
    n_layer: int = 1
    """Transformer blocks (the paper: 1)."""
    n_embd: int = 128
    """Residual stream width (the paper: 128)."""
    n_inner: int = 512
    """MLP width, i.e. the neurons a dictionary decomposes (the paper: 512)."""
    n_head: int = 4
    """Attention heads."""
    steps: int = 3000
    """Optimizer steps."""
    batch_size: int = 32
    """Contexts per step."""
    lr: float = 2e-3
    """Peak learning rate."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak."""
    warmup_steps: int = 100
    """Linear warm-up steps."""
    schedule: Literal["cosine", "linear"] = "cosine"
    """Decay after warm-up."""
    weight_decay: float = 0.1
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient-norm clipping (0 disables)."""
    bf16: bool = True
    """bf16 autocast for the matrix products."""
    compile: bool = False
    """torch.compile the training step (costs ~25 s up front, ~1.6x faster after)."""
    eval_every: int = 500
    """Steps between validation-loss estimates."""
    eval_contexts: int = 512
    """Validation contexts per estimate (the final one uses up to 4x this)."""
    threads: int = 0
    """torch threads while training; 0 = every core."""
    seed: int = 0
    """Seed for the initialisation and the batch order."""

    def __post_init__(self) -> None:
        check_fields(self, "lm", positive=("n_layer", "n_embd", "n_inner", "n_head", "steps",
                                           "batch_size", "eval_every", "eval_contexts"))
        if self.n_embd % self.n_head:
            raise ConfigError(f"lm.n_embd={self.n_embd} must be divisible by "
                              f"lm.n_head={self.n_head}")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"lm.lr={self.lr} must be > 0 and lm.min_lr_ratio in [0, 1]")


@contextmanager
def torch_threads(n: int):
    """Use `n` torch threads inside the block (0 = all cores), then restore the old count."""
    old = torch.get_num_threads()
    torch.set_num_threads(n if n > 0 else (os.cpu_count() or 1))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def build_model(cfg: LMConfig, vocab_size: int, context_size: int, eos_id: int):
    """A freshly initialised GPT2LMHeadModel with the paper's shape and no dropout."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab_size, n_positions=context_size, n_embd=cfg.n_embd,
        n_layer=cfg.n_layer, n_head=cfg.n_head, n_inner=cfg.n_inner,
        activation_function="relu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=eos_id, eos_token_id=eos_id,
        featurewatch_model_id=cfg.model_id,
    )
    # eager attention: faster than sdpa for these tiny heads on CPU and hookable everywhere.
    return GPT2LMHeadModel._from_config(config, attn_implementation="eager")


def lr_factor(cfg: LMConfig, step: int) -> float:
    """Multiplier of the peak learning rate at `step` (warm-up, then cosine or linear decay)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    progress = min(progress, 1.0)
    decay = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * decay


def next_token_loss(model, tokens: torch.Tensor, bf16: bool) -> torch.Tensor:
    """Mean next-token cross-entropy of `tokens` [B, T] (logits cast to float32 for the loss)."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=tokens).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten())


@torch.no_grad()
def validation_loss(model, val_tokens: np.ndarray, n_contexts: int, batch_size: int,
                    bf16: bool = True) -> float:
    """Mean next-token loss over the first `n_contexts` validation contexts."""
    was_training = model.training
    model.eval()
    rows = val_tokens[: min(n_contexts, len(val_tokens))]
    total, count = 0.0, 0
    for i in range(0, len(rows), batch_size):
        batch = torch.from_numpy(np.asarray(rows[i: i + batch_size], dtype=np.int64))
        total += next_token_loss(model, batch, bf16).item() * len(batch)
        count += len(batch)
    model.train(was_training)
    return total / max(count, 1)


def _step_fn(model, cfg: LMConfig):
    def step(batch: torch.Tensor) -> torch.Tensor:
        return next_token_loss(model, batch, cfg.bf16)

    if not cfg.compile:
        return step
    return torch.compile(step)


def _batches(n_contexts: int, batch_size: int, rng: np.random.Generator):
    """Indices of contexts, batch by batch, reshuffled every epoch."""
    while True:
        order = rng.permutation(n_contexts)
        for i in range(0, n_contexts - batch_size + 1, batch_size):
            yield np.sort(order[i: i + batch_size])  # sorted reads are kinder to a memmap


def _check_tokens(train_tokens: np.ndarray, val_tokens: np.ndarray, cfg: LMConfig) -> None:
    if train_tokens.ndim != 2 or val_tokens.ndim != 2:
        raise ConfigError("train/val tokens must be 2-D [n_contexts, context_size]")
    if train_tokens.shape[1] != val_tokens.shape[1]:
        raise ConfigError(f"train contexts have {train_tokens.shape[1]} tokens but val contexts "
                          f"have {val_tokens.shape[1]}")
    if len(train_tokens) < cfg.batch_size:
        raise ConfigError(f"only {len(train_tokens)} training contexts, fewer than "
                          f"lm.batch_size={cfg.batch_size}")


def _fit(model, cfg: LMConfig, train_tokens, val_tokens, seed: int, progress: bool
         ) -> dict[str, Any]:
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95),
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg, s))
    step_fn, batches = _step_fn(model, cfg), _batches(len(train_tokens), cfg.batch_size,
                                                       np.random.default_rng(seed))
    tokens_seen, train_seconds, curve, loss = 0, 0.0, [], float("nan")
    bar = tqdm(range(cfg.steps), desc="lm", unit="step", disable=not progress)
    for step in bar:
        start = time.perf_counter()
        batch = torch.from_numpy(np.asarray(train_tokens[next(batches)], dtype=np.int64))
        loss_t = step_fn(batch)
        loss_t.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss = loss_t.item()
        # The first (compiling) step is not throughput; leave it out of tokens/s.
        if step > 0 or not cfg.compile:
            train_seconds += time.perf_counter() - start
            tokens_seen += batch.numel()
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            val = validation_loss(model, val_tokens, cfg.eval_contexts, cfg.batch_size, cfg.bf16)
            curve.append({"step": step + 1, "train_loss": loss, "val_loss": val})
        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_seen / max(train_seconds, 1e-9):.0f}",
                        lr=f"{sched.get_last_lr()[0]:.1e}", refresh=False)
    bar.close()
    return {"train_loss": loss, "curve": curve, "train_seconds": round(train_seconds, 2),
            "tokens_per_second": round(tokens_seen / max(train_seconds, 1e-9), 1)}


def train_lm(cfg: LMConfig, train_tokens: np.ndarray, val_tokens: np.ndarray,
             tokenizer_dir: str | Path, out_dir: str | Path, *, seed: int | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Train the model on token contexts and save it (+ tokenizer) to `out_dir`; returns stats."""
    from featurewatch.training.tokenizer import EOS_TOKEN, load_tokenizer

    _check_tokens(train_tokens, val_tokens, cfg)
    seed = cfg.seed if seed is None else seed
    tokenizer = load_tokenizer(tokenizer_dir)
    vocab, context_size = tokenizer.get_vocab_size(), int(train_tokens.shape[1])
    if int(np.max(train_tokens)) >= vocab:
        raise ConfigError(f"token ids reach {int(np.max(train_tokens))} but the tokenizer has "
                          f"{vocab} entries: tokens and tokenizer do not match")
    with torch_threads(cfg.threads):
        torch.manual_seed(seed)
        model = build_model(cfg, vocab, context_size, tokenizer.token_to_id(EOS_TOKEN))
        model.train()
        start = time.perf_counter()
        stats = _fit(model, cfg, train_tokens, val_tokens, seed, progress)
        stats["val_loss"] = validation_loss(model, val_tokens, 4 * cfg.eval_contexts,
                                            cfg.batch_size, cfg.bf16)
    stats.update(seconds=round(time.perf_counter() - start, 2), seed=seed,
                 params=sum(p.numel() for p in model.parameters()),
                 context_size=context_size, vocab_size=vocab, threads=cfg.threads or os.cpu_count(),
                 config=asdict(cfg))
    save_model(model, tokenizer_dir, out_dir, context_size)
    (Path(out_dir) / STATS_FILE).write_text(json.dumps(stats, indent=2))
    return stats


def save_model(model, tokenizer_dir: str | Path, out_dir: str | Path, context_size: int) -> None:
    """save_pretrained the model and the tokenizer (as PreTrainedTokenizerFast) side by side."""
    from transformers import PreTrainedTokenizerFast

    from featurewatch.training.tokenizer import EOS_TOKEN, tokenizer_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out)
    fast = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file(tokenizer_dir)),
                                   eos_token=EOS_TOKEN, bos_token=EOS_TOKEN,
                                   pad_token=EOS_TOKEN, model_max_length=context_size)
    fast.save_pretrained(out)


def load_model(model_dir: str | Path, *, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) from any local HF causal LM directory; eval mode, CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ModelError(f"{model_dir}: not a model directory (no config.json); train one with "
                         "`featurewatch train lm` or point at a local Hugging Face model")
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True,
                                                     dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"{model_dir}: cannot load model/tokenizer ({exc})") from None
    return model.eval(), tokenizer
