"""Logit effects: which tokens a feature's decoder direction makes more or less likely.

The direction d_i (in hook-point units) goes through the MLP output projection (for
`mlp.hook_post`; residual-stream hook points are already in residual units), the final layer
norm linearised (centring for LayerNorm, then its gain and the mean 1/σ measured on real
tokens; RMSNorm has no centring) and the unembedding. Only this direct path is counted, which
is exact up to the norm's linearisation for the last layer. Each row is median-centred over the
vocabulary, as in the paper's feature pages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from featurewatch.errors import ModelError
from featurewatch.training.hooks import HOOK_RE, LAYOUTS, model_family, resolve

# family -> final norm module path (the unembedding is model.get_output_embeddings()).
FINAL_NORMS = {"gpt2": "transformer.ln_f", "gpt_neox": "gpt_neox.final_layer_norm",
               "llama": "model.norm"}


@dataclass(frozen=True)
class LogitEffects:
    """Top positive / negative token ids and their median-centred logit effects, per code."""

    pos_ids: np.ndarray     # int64 [d, k]
    pos_values: np.ndarray  # float32 [d, k]
    neg_ids: np.ndarray     # int64 [d, k], most negative first
    neg_values: np.ndarray  # float32 [d, k]


def final_norm(model: nn.Module) -> nn.Module:
    """The final normalisation layer before the unembedding."""
    return model.get_submodule(FINAL_NORMS[model_family(model)])


def _out_projection(model: nn.Module, hook_point: str) -> torch.Tensor | None:
    """[d_in, hidden] matrix mapping the hook point into the residual stream (None: identity)."""
    match = HOOK_RE.match(hook_point)
    if match is None:
        resolve(model, hook_point)  # raises ModelError naming the hook point
    if match.group(2) != "mlp.hook_post":
        return None
    proj = resolve(model, hook_point).module
    weight = proj.weight.detach().float()
    # GPT-2's Conv1D stores [in, out]; nn.Linear stores [out, in].
    return weight if not isinstance(proj, nn.Linear) else weight.T


def _is_layer_norm(norm: nn.Module) -> bool:
    return isinstance(norm, nn.LayerNorm) or "LayerNorm" in type(norm).__name__


@torch.no_grad()
def final_norm_scale(model: nn.Module, tokens: torch.Tensor) -> float:
    """Mean 1/σ (1/RMS for RMSNorm) of the final norm's input over `tokens` [B, T].

    Used as the norm's linearisation point, so effects are logits per unit of activation.
    """
    norm, seen = final_norm(model), []

    def hook(_module, args):
        x = args[0].float()
        if _is_layer_norm(norm):
            x = x - x.mean(-1, keepdim=True)
        seen.append(1.0 / x.pow(2).mean(-1).add(1e-5).sqrt())

    handle = norm.register_forward_pre_hook(hook)
    try:
        model(input_ids=tokens.long())
    finally:
        handle.remove()
    return float(torch.cat([s.flatten() for s in seen]).mean())


def residual_directions(model: nn.Module, hook_point: str, directions: torch.Tensor
                        ) -> torch.Tensor:
    """Directions [d, d_in] at the hook point mapped into the residual stream [d, hidden]."""
    proj = _out_projection(model, hook_point)
    directions = directions.detach().float()
    if proj is None:
        return directions
    if directions.shape[1] != proj.shape[0]:
        raise ModelError(f"hook_point {hook_point!r} has d_in={proj.shape[0]} but the "
                         f"directions have {directions.shape[1]} dimensions")
    return directions @ proj


@torch.no_grad()
def logit_effects(model: nn.Module, hook_point: str, directions: torch.Tensor, *, k: int = 10,
                  norm_scale: float = 1.0, chunk: int = 1024) -> LogitEffects:
    """Median-centred direct logit effects of each direction [d, d_in]; top-k either way."""
    family = model_family(model)
    if family not in LAYOUTS:
        raise ModelError(f"logit effects are not supported for model family {family!r}")
    norm = final_norm(model)
    unembed = model.get_output_embeddings().weight.detach().float()  # [vocab, hidden]
    gain = getattr(norm, "weight", None)
    gain = torch.ones(unembed.shape[1]) if gain is None else gain.detach().float()
    k = min(k, unembed.shape[0])
    parts: list[tuple[torch.Tensor, ...]] = []
    for start in range(0, directions.shape[0], chunk):
        resid = residual_directions(model, hook_point, directions[start: start + chunk])
        if _is_layer_norm(norm):
            resid = resid - resid.mean(-1, keepdim=True)
        logits = (resid * gain * norm_scale) @ unembed.T
        logits -= logits.median(dim=-1, keepdim=True).values
        pos = logits.topk(k, dim=-1)
        neg = logits.topk(k, dim=-1, largest=False)
        parts.append((pos.indices, pos.values, neg.indices, neg.values))
    cat = [torch.cat([p[i] for p in parts]).numpy() for i in range(4)]
    return LogitEffects(cat[0].astype(np.int64), cat[1].astype(np.float32),
                        cat[2].astype(np.int64), cat[3].astype(np.float32))
