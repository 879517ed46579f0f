"""Next-token sampling: temperature, top-k and nucleus (top-p) filtering, seeded per request."""

from __future__ import annotations

import torch

from featurewatch.services.inference.domain import SamplingParams


def filter_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature-scaled logits [V] (float64) with tokens outside top-k / top-p set to -inf.

    float64 because a tiny temperature overflows float32 (1e-38 turns logits into ±inf, and
    softmax into NaN); in float64 it just approaches greedy, as it should.
    """
    scaled = logits.double() / params.temperature
    if 0 < params.top_k < scaled.numel():
        kth = torch.topk(scaled, params.top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(scaled, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens before it already reach top_p (the first always stays).
        before = torch.cumsum(probs, dim=-1) - probs
        drop = before >= params.top_p
        scaled = scaled.clone()
        scaled[order[drop]] = float("-inf")
    return scaled


def sample_token(logits: torch.Tensor, params: SamplingParams,
                 generator: torch.Generator) -> tuple[int, float]:
    """(token id, its log-probability under the unfiltered model distribution) from logits [V]."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    if params.temperature == 0:
        token = int(torch.argmax(logits))
    else:
        probs = torch.softmax(filter_logits(logits, params), dim=-1)
        token = draw(probs, generator)
    return token, float(logprobs[token])


def draw(probs: torch.Tensor, generator: torch.Generator) -> int:
    """One index drawn from `probs` [V] by inverting its CDF (torch.multinomial is ~10x slower
    for a single draw). The first index whose CDF exceeds u has positive probability."""
    cdf = torch.cumsum(probs, dim=0)
    u = torch.rand(1, generator=generator, dtype=cdf.dtype) * cdf[-1]
    index = int(torch.searchsorted(cdf, u, right=True))
    if index >= cdf.numel():  # u rounded up to the total: take the last possible token
        index = int(torch.nonzero(probs).max())
    return index


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded for one request, so a seed reproduces its sample."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
