"""Batched KV-cached decoding equals running each sequence alone, as rows join and leave."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from featurewatch.services.inference.kvbatch import DecodeBatch, forward_kwargs, output_cache


def _full_logits(model, ids: list[int]) -> torch.Tensor:
    return model(input_ids=torch.tensor([ids])).logits[0, -1]


def _prefill(model, cache_arg, ids):
    out = model(input_ids=torch.tensor([ids]), use_cache=True, **{cache_arg: DynamicCache()})
    return output_cache(out)


def _step_and_check(model, cache_arg, batch, seqs, feeds):
    logits = batch.step(model, cache_arg, feeds, [len(s) for s in seqs])
    for row, (seq, token) in enumerate(zip(seqs, feeds, strict=True)):
        seq.append(token)
        assert torch.allclose(logits[row], _full_logits(model, seq), atol=1e-4), row


def test_rows_join_and_leave(runtime):
    model = runtime.model
    cache_arg, _ = forward_kwargs(model)
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17]]
    with torch.inference_mode():
        batch, seqs = DecodeBatch(), []
        for prompt in prompts[:2]:
            batch.add(_prefill(model, cache_arg, prompt), len(prompt))
            seqs.append(list(prompt))
        assert batch.size == 2 and batch.mask.shape == (2, 7)
        for step in range(3):
            _step_and_check(model, cache_arg, batch, seqs, [20 + step, 30 + step])
        batch.add(_prefill(model, cache_arg, prompts[2]), len(prompts[2]))
        seqs.append(list(prompts[2]))
        _step_and_check(model, cache_arg, batch, seqs, [40, 41, 42])
        batch.keep([1, 2])  # the longest row leaves: its padding columns go with it
        seqs = seqs[1:]
        assert batch.mask.shape == (2, max(len(s) for s in seqs))
        for step in range(2):
            _step_and_check(model, cache_arg, batch, seqs, [50 + step, 60 + step])
        batch.keep([])
        assert batch.size == 0 and batch.cache is None
