"""Batched decoding over the model's KV cache: rows join and leave between decode steps.

Each request is prefilled alone (its own cache); it then joins the batch, whose cache is
left-padded to a common length with an attention mask hiding the padding, and every decode step
feeds one token per row with explicit position ids. The cache is only rebuilt when rows join or
leave; in between, the model appends to it in place.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from transformers import DynamicCache


def forward_kwargs(model: torch.nn.Module) -> tuple[str, bool]:
    """(name of the cache argument, whether `logits_to_keep` exists) of the model's forward."""
    params = inspect.signature(model.forward).parameters
    cache_arg = "cache" if "cache" in params else "past_key_values"
    return cache_arg, "logits_to_keep" in params


def output_cache(output) -> DynamicCache:
    """The cache a forward pass returned (transformers renamed past_key_values to cache)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def layers_kv(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (keys, values) of shape [B, heads, length, head_dim]."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))  # transformers 4.x


def build_cache(kv: list[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
    """A DynamicCache holding `kv`."""
    cache = DynamicCache()
    for layer, (keys, values) in enumerate(kv):
        cache.update(keys, values, layer)
    return cache


def _pad_left(t: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - t.shape[dim]
    if missing == 0:
        return t
    pad = [0, 0] * (t.dim() - 1 - dim) + [missing, 0]
    return F.pad(t, pad)


class DecodeBatch:
    """The rows decoding together: one left-padded cache and its attention mask [B, length]."""

    def __init__(self) -> None:
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return 0 if self.mask is None else int(self.mask.shape[0])

    def add(self, cache: DynamicCache, length: int) -> None:
        """Append a prefilled row whose cache holds `length` tokens."""
        row_mask = torch.ones(1, length, dtype=torch.long)
        if self.cache is None:
            self.cache, self.mask = cache, row_mask
            return
        width = max(self.mask.shape[1], length)
        merged = [(torch.cat([_pad_left(k, width, 2), _pad_left(rk, width, 2)]),
                   torch.cat([_pad_left(v, width, 2), _pad_left(rv, width, 2)]))
                  for (k, v), (rk, rv) in zip(layers_kv(self.cache), layers_kv(cache),
                                              strict=True)]
        self.cache = build_cache(merged)
        self.mask = torch.cat([_pad_left(self.mask, width, 1), _pad_left(row_mask, width, 1)])

    def keep(self, rows: list[int]) -> None:
        """Keep only `rows` (in that order), dropping padding no remaining row needs."""
        if len(rows) == self.size:
            return
        if not rows:
            self.cache, self.mask = None, None
            return
        index = torch.tensor(rows)
        mask = self.mask[index]
        start = int(torch.nonzero(mask.any(dim=0))[0])
        kv = [(k[index, :, start:], v[index, :, start:]) for k, v in layers_kv(self.cache)]
        self.cache, self.mask = build_cache(kv), mask[:, start:]

    def step(self, model: torch.nn.Module, cache_arg: str, tokens: list[int],
             positions: list[int]) -> torch.Tensor:
        """Feed one token per row at its position; the logits [B, vocab] of the next token."""
        assert self.mask is not None and len(tokens) == self.size
        mask = torch.cat([self.mask, torch.ones(self.size, 1, dtype=torch.long)], dim=1)
        out = model(input_ids=torch.tensor(tokens).unsqueeze(1), attention_mask=mask,
                    position_ids=torch.tensor(positions).unsqueeze(1), use_cache=True,
                    **{cache_arg: self.cache})
        self.cache, self.mask = output_cache(out), mask
        return out.logits[:, -1]
