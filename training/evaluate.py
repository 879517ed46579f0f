"""Judge a dictionary on held-out tokens the paper's way: reconstruction, sparsity, feature
health and loss recovered when the reconstruction is spliced into the model.

Two streaming passes, each holding one batch at a time:
1. activations — the model runs only up to the hook point (the rest of the forward pass is
   skipped); the dictionary encodes and decodes x there: MSE, FVU, L0, per-feature firing
   counts and the mean activation (for mean ablation), over up to `max_tokens` tokens;
2. losses — on the first `loss_max_tokens` tokens, four forward passes per batch: clean, x
   replaced by x̂ (spliced), by zeros and by the mean activation. Next-token cross-entropy and
   KL(clean ‖ variant) are computed from float32 log-probabilities, sums in float64.
loss recovered = (L_zero − L_spliced) / (L_zero − L_clean).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from featurewatch.config import check_fields
from featurewatch.errors import ConfigError, CorpusError, ModelError
from featurewatch.training.density import density_summary, plot_density_histogram
from featurewatch.training.dictionary import Dictionary
from featurewatch.training.hooks import attach, forward_to_hook, resolve

__all__ = ["EvaluateConfig", "evaluate_dictionary", "plot_density_histogram"]


@dataclass(frozen=True)
class EvaluateConfig:
    """How a dictionary is evaluated (the `[evaluate]` table)."""

    max_tokens: int = 1_000_000
    """Held-out tokens (whole contexts, from the start) for MSE, FVU, L0 and feature densities;
    the split's size if smaller. Densities below 1/max_tokens cannot be resolved."""
    loss_max_tokens: int = 65_536
    """Of those, how many (the first) go through the four forward passes for CE losses and KL."""
    batch_size: int = 32
    """Contexts per forward pass; the loss pass holds ~4 float32 [batch, context, vocab]
    tensors, so lower it for large vocabularies."""
    ultralow_threshold: float = 1e-6
    """A live feature with density below this is 'ultralow' (dead features counted apart)."""
    dense_threshold: float = 0.01
    """A feature with density above this is 'dense'."""
    hist_bins: int = 40
    """Bins of the log10 density histogram."""
    hist_log10_min: float = -8.0
    """Left edge of the log10 density histogram; rarer live features go in the first bin."""
    mean_ablation: bool = True
    """Also measure the loss with x replaced by its mean activation (one more forward pass)."""
    autocast: bool = True
    """Run the model and the dictionary under bf16 autocast (losses stay float32)."""
    device: str = "auto"
    """torch device to evaluate on; "auto" keeps the model where it is."""

    def __post_init__(self) -> None:
        check_fields(self, "evaluate",
                     positive=("max_tokens", "loss_max_tokens", "batch_size", "hist_bins"))
        for name in ("ultralow_threshold", "dense_threshold"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(f"evaluate: {name}={getattr(self, name)} must be in (0, 1)")
        if self.hist_log10_min >= 0:
            raise ConfigError(f"evaluate: hist_log10_min={self.hist_log10_min} must be < 0")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError:
                raise ConfigError(f"evaluate: device={self.device!r} is not a torch device "
                                  "(e.g. cpu, cuda, cuda:1, auto)") from None


@dataclass
class _ActivationSums:
    """Running float64 / int64 sums over the activation pass."""

    sum_x: torch.Tensor
    sum_x2: torch.Tensor
    fire: torch.Tensor
    sq_err: float = 0.0
    active: int = 0
    n: int = 0

    @classmethod
    def zeros(cls, d_in: int, d_sae: int, device: torch.device) -> _ActivationSums:
        return cls(torch.zeros(d_in, dtype=torch.float64, device=device),
                   torch.zeros(d_in, dtype=torch.float64, device=device),
                   torch.zeros(d_sae, dtype=torch.int64, device=device))

    def update(self, x: torch.Tensor, x_hat: torch.Tensor, f: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).float()
        # int32 per batch (exact below 2**31 tokens a batch) is ~2x faster than bool → int64.
        fired = (f.reshape(-1, f.shape[-1]) > 0).sum(0, dtype=torch.int32)
        self.sq_err += float((x - x_hat.reshape(x.shape).float()).pow(2).sum(dtype=torch.float64))
        self.sum_x += x.sum(0, dtype=torch.float64)
        self.sum_x2 += x.pow(2).sum(0, dtype=torch.float64)
        self.fire += fired
        self.active += int(fired.sum(dtype=torch.int64))
        self.n += x.shape[0]

    def mean(self) -> torch.Tensor:
        return (self.sum_x / max(self.n, 1)).float()

    def metrics(self) -> dict[str, Any]:
        n, d_in = max(self.n, 1), self.sum_x.numel()
        # Σ‖x − mean‖² = Σ_j (Σ x_j² − (Σ x_j)² / n), per dimension in float64.
        total_var = float((self.sum_x2 - self.sum_x.pow(2) / n).clamp_min(0).sum())
        return {"mse": self.sq_err / (n * d_in),
                "fvu": self.sq_err / total_var if total_var > 0 else None,
                "l0": self.active / n}


def _check_inputs(model: nn.Module, dictionary: Dictionary, hook_point: str, tokens: Any,
                  max_tokens: int) -> np.ndarray:
    """The contexts to evaluate (at most max_tokens worth, at least one), checked."""
    d_in = resolve(model, hook_point).d_in
    if d_in != dictionary.d_in:
        raise ModelError(f"hook_point {hook_point!r} has d_in={d_in} but the dictionary has "
                         f"d_in={dictionary.d_in}: it was trained on another hook point or model")
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[0] == 0 or tokens.shape[1] < 2:
        raise CorpusError(f"evaluation tokens must be an array [n_contexts >= 1, context >= 2], "
                          f"got shape {list(tokens.shape)}")
    if not np.issubdtype(tokens.dtype, np.integer):
        raise CorpusError(f"evaluation tokens must be integer ids, got dtype {tokens.dtype}")
    tokens = tokens[: max(1, max_tokens // tokens.shape[1])]  # a memmap stays unread beyond
    vocab = int(model.config.vocab_size)
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= vocab:
        raise ModelError(f"evaluation tokens hold ids in [{low}, {high}] but the model's "
                         f"vocab_size is {vocab}: tokens from another tokenizer?")
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions and tokens.shape[1] > positions:
        raise ModelError(f"evaluation contexts have {tokens.shape[1]} tokens but the model's "
                         f"max_position_embeddings is {positions}")
    return tokens


def _batches(tokens: np.ndarray, n_contexts: int, batch_size: int,
             device: torch.device) -> Iterator[torch.Tensor]:
    for start in range(0, n_contexts, batch_size):
        chunk = np.asarray(tokens[start:min(start + batch_size, n_contexts)], dtype=np.int64)
        yield torch.from_numpy(chunk).to(device)


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def _activation_pass(model: nn.Module, dictionary: Dictionary, hook_point: str,
                     tokens: np.ndarray, n_contexts: int, cfg: EvaluateConfig,
                     device: torch.device, progress: bool) -> _ActivationSums:
    sums = _ActivationSums.zeros(dictionary.d_in, dictionary.d_sae, device)

    bar = tqdm(total=n_contexts * tokens.shape[1], unit="tok", desc="evaluate: activations",
               disable=not progress, dynamic_ncols=True)
    with bar:
        for ids in _batches(tokens, n_contexts, cfg.batch_size, device):
            acts = forward_to_hook(model, hook_point, ids, autocast=cfg.autocast)
            with _autocast(device, cfg.autocast):
                x_hat, f = dictionary(acts)
            sums.update(acts, x_hat, f)
            bar.update(ids.numel())
            live = sums.metrics()
            bar.set_postfix(mse=f"{live['mse']:.4g}", l0=f"{live['l0']:.1f}")
    return sums


def _log_probs(model: nn.Module, ids: torch.Tensor, device: torch.device,
               autocast: bool) -> torch.Tensor:
    """float32 log-probabilities of the next token at every position but the last."""
    with _autocast(device, autocast):
        logits = model(input_ids=ids, use_cache=False).logits
    return logits[:, :-1].float().log_softmax(-1)


def _nll_sum(log_probs: torch.Tensor, targets: torch.Tensor) -> float:
    return -float(log_probs.gather(-1, targets.unsqueeze(-1)).sum(dtype=torch.float64))


def _kl_sum(clean: torch.Tensor, other: torch.Tensor) -> float:
    """Σ over positions of KL(clean ‖ other) = Σ_v p_clean (log p_clean − log p_other)."""
    return float((clean.exp() * (clean - other)).sum(-1).sum(dtype=torch.float64))


def _replacements(dictionary: Dictionary, mean: torch.Tensor | None
                  ) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    fns: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "spliced": lambda acts: dictionary(acts)[0].to(acts.dtype),
        "zero_ablation": torch.zeros_like,
    }
    if mean is not None:
        fns["mean_ablation"] = lambda acts: mean.to(acts.dtype).expand_as(acts)
    return fns


def _loss_pass(model: nn.Module, dictionary: Dictionary, hook_point: str, tokens: np.ndarray,
               n_contexts: int, mean: torch.Tensor | None, cfg: EvaluateConfig,
               device: torch.device, progress: bool) -> dict[str, Any]:
    replacements = _replacements(dictionary, mean)
    nll = dict.fromkeys(["clean", *replacements], 0.0)
    kl = dict.fromkeys(replacements, 0.0)
    n = 0
    bar = tqdm(total=n_contexts * tokens.shape[1], unit="tok", desc="evaluate: losses",
               disable=not progress, dynamic_ncols=True)
    with bar:
        for ids in _batches(tokens, n_contexts, cfg.batch_size, device):
            targets = ids[:, 1:]
            clean = _log_probs(model, ids, device, cfg.autocast)
            nll["clean"] += _nll_sum(clean, targets)
            for name, fn in replacements.items():
                with attach(model, hook_point, fn):
                    other = _log_probs(model, ids, device, cfg.autocast)
                nll[name] += _nll_sum(other, targets)
                kl[name] += _kl_sum(clean, other)
            n += targets.numel()
            bar.update(ids.numel())
            bar.set_postfix(recovered=f"{_recovered(nll, 'zero_ablation', n) or 0:.3f}")
    out: dict[str, Any] = {"n_loss_tokens": n}
    out.update({f"ce_loss_{name}": total / n for name, total in nll.items()})
    out.update({f"kl_{name}": total / n for name, total in kl.items()})
    out["loss_recovered"] = _recovered(nll, "zero_ablation", n)
    if mean is not None:
        out["loss_recovered_mean_ablation"] = _recovered(nll, "mean_ablation", n)
    return out


def _recovered(nll: dict[str, float], baseline: str, n: int) -> float | None:
    """(L_baseline − L_spliced) / (L_baseline − L_clean); None when the baseline costs nothing."""
    gap = (nll[baseline] - nll["clean"]) / max(n, 1)
    if abs(gap) < 1e-9:
        return None
    return (nll[baseline] - nll["spliced"]) / max(n, 1) / gap


@contextmanager
def _eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) for the block; each module's training flag is restored after."""
    flags = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, flag in zip(modules, flags, strict=True):
            m.train(flag)


def evaluate_dictionary(model: nn.Module, dictionary: Dictionary, hook_point: str, tokens: Any,
                        cfg: EvaluateConfig | None = None, *, progress: bool = True
                        ) -> dict[str, Any]:
    """metrics.json for `dictionary` at `hook_point` of `model`, on held-out `tokens`
    (int array [n_contexts, context]). With cfg.device set, model and dictionary move there."""
    cfg = cfg or EvaluateConfig()
    tokens = _check_inputs(model, dictionary, hook_point, tokens, cfg.max_tokens)
    device = next(model.parameters()).device if cfg.device == "auto" else torch.device(cfg.device)
    model.to(device)
    dictionary.to(device)
    n_act = len(tokens)
    n_loss = min(n_act, max(1, cfg.loss_max_tokens // tokens.shape[1]))
    started = time.perf_counter()
    with torch.inference_mode(), _eval_mode(model, dictionary):
        sums = _activation_pass(model, dictionary, hook_point, tokens, n_act, cfg, device,
                                progress)
        mean = sums.mean() if cfg.mean_ablation else None
        losses = _loss_pass(model, dictionary, hook_point, tokens, n_loss, mean, cfg, device,
                            progress)
    health = density_summary(sums.fire.cpu().numpy(), sums.n,
                             ultralow_threshold=cfg.ultralow_threshold,
                             dense_threshold=cfg.dense_threshold, bins=cfg.hist_bins,
                             log10_min=cfg.hist_log10_min)
    density = health.pop("feature_density")
    return {
        "hook_point": hook_point, "architecture": dictionary.architecture,
        "d_in": dictionary.d_in, "d_sae": dictionary.d_sae, "n_tokens": sums.n,
        **sums.metrics(), **losses, **health,
        "autocast": cfg.autocast, "seconds": time.perf_counter() - started,
        "feature_density": density,  # last: the one long list in metrics.json
    }
