"""Domain objects of the inference service: validated requests in, tokens and summaries out.

The servicer turns protobuf into these (through validation.py) and back; the engine never sees
protobuf, so it can be driven and tested directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

SteeringMode = Literal["clamp", "add", "scale"]
FinishReason = Literal["length", "eos", "stop", "context_length"]


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is drawn; temperature 0 means greedy."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeatureFilter:
    """Which features a per-token trace reports (top_k 0 = no limit)."""

    dictionaries: tuple[str, ...]
    top_k: int = 0
    threshold: float = 0.0


@dataclass(frozen=True)
class SteeringEdit:
    """One feature edit in absolute model units; positions None = every position."""

    dictionary_id: str
    feature: int
    mode: SteeringMode
    value: float
    positions: frozenset[int] | None = None


@dataclass(frozen=True)
class GenerationRequest:
    """A validated Generate request."""

    request_id: str
    prompt: str
    prompt_ids: tuple[int, ...]
    max_new_tokens: int
    sampling: SamplingParams
    filter: FeatureFilter
    include_prompt: bool = False
    traced: bool = True
    steering: tuple[SteeringEdit, ...] = ()


@dataclass(frozen=True)
class TraceRequest:
    """A validated Trace request: token ids to run through the model."""

    token_ids: tuple[int, ...]
    filter: FeatureFilter


#: Sparse trace of one token in one dictionary: (feature ids uint32, activations float32).
SparseTrace = tuple[np.ndarray, np.ndarray]


@dataclass
class TokenOut:
    """One streamed (or traced) token."""

    id: int
    text: str
    logprob: float
    position: int
    prompt: bool
    features: dict[str, SparseTrace] = field(default_factory=dict)


@dataclass
class GenerationSummary:
    """The end of a generation."""

    request_id: str
    finish_reason: FinishReason
    prompt_tokens: int
    generated_tokens: int
    time_to_first_token_s: float
    total_s: float
    seed: int
    stop: str = ""


@dataclass(frozen=True)
class DictionarySpec:
    """What validation needs to know about a loaded dictionary."""

    d_sae: int
    max_activation: Callable[[int], float | None]


@dataclass(frozen=True)
class Limits:
    """Request limits of the server and the model."""

    max_prompt_chars: int
    max_prompt_tokens: int
    max_new_tokens: int
    default_new_tokens: int
    max_stop_strings: int
    context_length: int
    vocab_size: int


@dataclass(frozen=True)
class ServingSpec:
    """The loaded model and dictionaries as request validation sees them."""

    limits: Limits
    dictionaries: dict[str, DictionarySpec]
    encode: Callable[[str], list[int]]
