"""Forward passes with the dictionaries attached: encode (and steer) at each hook point.

One hook per hook point stays attached for the engine's lifetime; before each forward pass the
engine sets a `PassPlan` (positions of the tokens, steering edits per row) and afterwards reads
the features every dictionary saw. Without a plan, or when nothing needs features, the hooks
leave the model untouched, so plain generation costs nothing extra; a pass that only steers
encodes only the steered dictionaries.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from featurewatch.services.inference.domain import SteeringEdit
from featurewatch.services.inference.runtime import LoadedDictionary
from featurewatch.services.inference.steering import steer_rows
from featurewatch.training import hooks
from featurewatch.training.dictionary import Dictionary

#: The sparse product reads one row of W_enc per non-zero input; below this fraction of non-zero
#: inputs that is cheaper than the dense product reading all of it. Only a single row (a decode
#: step of one stream) takes it: post-ReLU MLP activations are about 27% non-zero, so two rows
#: already read more than half of W_enc, and a 16-row sparse product takes 2.1 ms against 1.0 ms
#: dense (512 × 4096, one core).
SPARSE_MAX_DENSITY = 0.35
#: ... and only for an encoder of at least this many weights: a smaller W_enc stays in the CPU
#: caches, and the dense product is faster than the sparse one's set-up (one decode row on one
#: core: 512 × 512 takes 31 µs dense vs 48 µs sparse; 512 × 4096 takes 440 µs dense vs 250 µs
#: sparse).
SPARSE_MIN_WEIGHTS = 1 << 19


class Encoder:
    """`Dictionary.encode` for serving, equal up to float rounding but cheaper per token.

    The encoder product is the trace's main cost (512 × 4096 for the paper's dictionary, larger
    than the model's own blocks). Folding b_dec into the bias, f = σ(x W_enc + b_enc − b_dec
    W_enc), lets post-ReLU MLP activations — mostly zeros — be multiplied as a sparse vector: an
    embedding bag sums the rows of W_enc that the non-zero entries select, weighted by them.
    """

    def __init__(self, dictionary: Dictionary, sparse_min_weights: int = SPARSE_MIN_WEIGHTS
                 ) -> None:
        self.dictionary = dictionary
        self.weight = dictionary.W_enc.detach().contiguous()
        self.bias = (dictionary.b_enc - dictionary.b_dec @ dictionary.W_enc).detach()
        self.may_sparse = self.weight.numel() >= sparse_min_weights
        self._offsets = torch.zeros(1, dtype=torch.long)

    def sparse_columns(self, flat: torch.Tensor) -> torch.Tensor | None:
        """The non-zero columns of flat [1, d_in] when the sparse product pays, else None."""
        if not self.may_sparse or flat.shape[0] != 1:
            return None
        cols = torch.nonzero(flat[0]).squeeze(1)
        return cols if cols.shape[0] < SPARSE_MAX_DENSITY * flat.shape[1] else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).to(self.weight.dtype)
        cols = self.sparse_columns(flat)
        if cols is None:
            pre = torch.addmm(self.bias, flat, self.weight)
        else:
            pre = F.embedding_bag(cols, self.weight, self._offsets, mode="sum",
                                  per_sample_weights=flat[0].index_select(0, cols)
                                  ).add_(self.bias)
        return self.dictionary.activate(pre).reshape(*x.shape[:-1], -1)


@dataclass
class PassPlan:
    """What one forward pass must do at the hook points."""

    positions: torch.Tensor
    """Absolute position of every token fed [B, T]."""
    trace: bool = True
    """Whether any row reports features (else only dictionaries with edits are encoded)."""
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
        if plan is None or not (plan.trace or plan.edits):
            return None
        out = x
        for entry in self.by_hook[hook_point]:
            row_edits = plan.edits.get(entry.dictionary_id)
            if not (plan.trace or row_edits):
                continue
            f = self.encoders[entry.dictionary_id](out)
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
