"""Forward passes with the dictionaries attached: encode (and steer) at each hook point.

One hook per hook point stays attached for the engine's lifetime; before each forward pass the
engine sets a `PassPlan` (positions of the tokens, steering edits per row) and afterwards reads
the features every dictionary saw. Without a plan, or when nothing needs features, the hooks
leave the model untouched, so plain generation costs nothing extra.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch

from featurewatch.services.inference.domain import SteeringEdit
from featurewatch.services.inference.runtime import LoadedDictionary
from featurewatch.services.inference.steering import steer_rows
from featurewatch.training import hooks
from featurewatch.training.dictionary import Dictionary

#: Below this fraction of non-zero inputs the encoder multiplies only the non-zero rows.
SPARSE_INPUT_MAX_DENSITY = 0.35
#: ... but only for an encoder of at least this many weights: a smaller W_enc stays in the CPU
#: caches, and the dense product is faster than the sparse one's set-up (one decode row on one
#: core: 512 × 512 takes 48 µs dense vs 115 µs sparse; 512 × 4096 takes 890 µs vs 290 µs).
SPARSE_MIN_WEIGHTS = 1 << 19


class Encoder:
    """`Dictionary.encode` for serving, equal up to float rounding but cheaper per token.

    The encoder product is the trace's main cost (512 × 4096 for the paper's dictionary, larger
    than the model's own blocks). Folding b_dec into the bias, f = σ(x W_enc + b_enc − b_dec
    W_enc), lets post-ReLU MLP activations — mostly zeros — be multiplied as a sparse vector,
    reading only the rows of W_enc their non-zero entries select.
    """

    def __init__(self, dictionary: Dictionary, sparse_min_weights: int = SPARSE_MIN_WEIGHTS
                 ) -> None:
        self.dictionary = dictionary
        self.weight = dictionary.W_enc.detach()
        self.bias = (dictionary.b_enc - dictionary.b_dec @ dictionary.W_enc).detach()
        self.may_sparse = self.weight.numel() >= sparse_min_weights

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).to(self.weight.dtype)
        if (self.may_sparse
                and int(torch.count_nonzero(flat)) < SPARSE_INPUT_MAX_DENSITY * flat.numel()):
            pre = torch.sparse.mm(flat.to_sparse(), self.weight) + self.bias
        else:
            pre = torch.addmm(self.bias, flat, self.weight)
        return self.dictionary.activate(pre).reshape(*x.shape[:-1], -1)


@dataclass
class PassPlan:
    """What one forward pass must do at the hook points."""

    positions: torch.Tensor
    """Absolute position of every token fed [B, T]."""
    encode: bool = True
    """Whether any row needs features (trace or steering)."""
    edits: dict[str, dict[int, Sequence[SteeringEdit]]] = field(default_factory=dict)
    """dictionary id → batch row → edits of that row."""
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    """Filled by the pass: dictionary id → features [B, T, d_sae] (after steering)."""


class HookRouter:
    """Routes each hook point's activations through the dictionaries bound to it."""

    def __init__(self, dictionaries: Sequence[LoadedDictionary]) -> None:
        self.by_hook: dict[str, list[LoadedDictionary]] = defaultdict(list)
        self.encoders: dict[str, Encoder] = {}
        for entry in dictionaries:
            self.by_hook[entry.hook_point].append(entry)
            self.encoders[entry.dictionary_id] = Encoder(entry.dictionary)
        self.plan: PassPlan | None = None

    def install(self, model: torch.nn.Module) -> ExitStack:
        """Attach one hook per hook point; closing the returned stack detaches them."""
        stack = ExitStack()
        for hook_point in self.by_hook:
            stack.enter_context(hooks.attach(
                model, hook_point, lambda x, hp=hook_point: self._on_activations(hp, x)))
        return stack

    def _on_activations(self, hook_point: str, x: torch.Tensor) -> torch.Tensor | None:
        plan = self.plan
        if plan is None or not plan.encode:
            return None
        out = x
        for entry in self.by_hook[hook_point]:
            f = self.encoders[entry.dictionary_id](out)
            row_edits = plan.edits.get(entry.dictionary_id)
            if row_edits:
                out, f = steer_rows(entry.dictionary, out, f, row_edits, plan.positions)
            plan.features[entry.dictionary_id] = f
        return None if out is x else out

    def run(self, plan: PassPlan, forward, *args, **kwargs):
        """Call `forward(*args, **kwargs)` with `plan` active at the hook points."""
        self.plan = plan
        try:
            return forward(*args, **kwargs)
        finally:
            self.plan = None
