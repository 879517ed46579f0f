"""Hook points: named places in a Hugging Face causal LM where activations are read or replaced.

Names follow SAELens / TransformerLens so bundles carry over:
- `blocks.{L}.mlp.hook_post`  — MLP activations after the nonlinearity (input of the MLP output
  projection; for gated MLPs such as Llama's this is act(gate) * up),
- `blocks.{L}.hook_mlp_out`   — the MLP block's output,
- `blocks.{L}.hook_resid_post` — the residual stream after block L.
Supported module layouts: GPT-2, GPT-NeoX (Pythia) and Llama-style (Llama, Mistral, Qwen2).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import torch
from torch import nn

from featurewatch.errors import ModelError

HOOK_RE = re.compile(r"^blocks\.(\d+)\.(mlp\.hook_post|hook_mlp_out|hook_resid_post)$")
DEFAULT_HOOK_POINT = "blocks.0.mlp.hook_post"

# family -> (path to the list of blocks, mlp attribute, mlp output projection attribute)
LAYOUTS: dict[str, tuple[str, str, str]] = {
    "gpt2": ("transformer.h", "mlp", "c_proj"),
    "gpt_neox": ("gpt_neox.layers", "mlp", "dense_4h_to_h"),
    "llama": ("model.layers", "mlp", "down_proj"),
}
LLAMA_LIKE = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "phi3"}

ActivationFn = Callable[[torch.Tensor], torch.Tensor | None]


@dataclass(frozen=True)
class HookTarget:
    """Where a hook point lives: the module and whether it reads its input or its output."""

    module: nn.Module
    reads_input: bool
    d_in: int


def model_family(model: nn.Module) -> str:
    """The layout family of a HF model, from its config's model_type."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in LAYOUTS:
        return model_type
    if model_type in LLAMA_LIKE:
        return "llama"
    raise ModelError(
        f"model_type {model_type!r} is not supported; supported layouts: "
        f"{sorted(LAYOUTS)} and Llama-like {sorted(LLAMA_LIKE)}"
    )


def _get(module: nn.Module, dotted: str) -> nn.Module:
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def _in_features(proj: nn.Module) -> int:
    if isinstance(proj, nn.Linear):
        return proj.in_features
    return int(proj.weight.shape[0])  # GPT-2's Conv1D stores weight as [in, out]


def resolve(model: nn.Module, hook_point: str) -> HookTarget:
    """Find the module behind `hook_point`; raise ModelError naming the hook point if absent."""
    match = HOOK_RE.match(hook_point)
    if not match:
        raise ModelError(
            f"hook_point {hook_point!r} is not recognised; expected blocks.<L>.mlp.hook_post, "
            "blocks.<L>.hook_mlp_out or blocks.<L>.hook_resid_post"
        )
    layer, kind = int(match.group(1)), match.group(2)
    blocks_path, mlp_attr, proj_attr = LAYOUTS[model_family(model)]
    blocks = _get(model, blocks_path)
    if layer >= len(blocks):
        raise ModelError(f"hook_point {hook_point!r}: the model has {len(blocks)} layers")
    block = blocks[layer]
    mlp = getattr(block, mlp_attr)
    proj = getattr(mlp, proj_attr)
    hidden = int(model.config.hidden_size)
    if kind == "mlp.hook_post":
        return HookTarget(proj, reads_input=True, d_in=_in_features(proj))
    if kind == "hook_mlp_out":
        return HookTarget(mlp, reads_input=False, d_in=hidden)
    return HookTarget(block, reads_input=False, d_in=hidden)


def hook_point_names(model: nn.Module) -> list[str]:
    """Every hook point this model supports."""
    blocks_path, _, _ = LAYOUTS[model_family(model)]
    n = len(_get(model, blocks_path))
    kinds = ("mlp.hook_post", "hook_mlp_out", "hook_resid_post")
    return [f"blocks.{i}.{k}" for i in range(n) for k in kinds]


@contextmanager
def attach(model: nn.Module, hook_point: str, fn: ActivationFn) -> Iterator[HookTarget]:
    """Call `fn(activations)` at `hook_point` on every forward pass inside the block.

    `fn` sees a tensor [batch, seq, d_in]; if it returns a tensor, that replaces the activations
    for the rest of the forward pass (used for splicing and steering), else they pass unchanged.
    """
    target = resolve(model, hook_point)

    def pre_hook(_module, args):
        out = fn(args[0])
        return None if out is None else (out, *args[1:])

    def fwd_hook(_module, _args, output):
        acts = output[0] if isinstance(output, tuple) else output
        out = fn(acts)
        if out is None:
            return None
        return (out, *output[1:]) if isinstance(output, tuple) else out

    if target.reads_input:
        handle = target.module.register_forward_pre_hook(pre_hook)
    else:
        handle = target.module.register_forward_hook(fwd_hook)
    try:
        yield target
    finally:
        handle.remove()


@contextmanager
def capture(model: nn.Module, hook_point: str) -> Iterator[list[torch.Tensor]]:
    """Collect the activations at `hook_point` of every forward pass inside the block."""
    store: list[torch.Tensor] = []

    def keep(acts: torch.Tensor) -> None:
        store.append(acts.detach())

    with attach(model, hook_point, keep):
        yield store


class _Reached(Exception):
    """Raised at the hook point by `forward_to_hook`: the layers after it are not needed."""


def forward_to_hook(model: nn.Module, hook_point: str, batch: torch.Tensor, *,
                    autocast: bool = False) -> torch.Tensor:
    """Activations [B, T, d_in] at `hook_point` for token ids `batch` [B, T], without gradients;
    the layers after the hook point are skipped. `autocast` runs the model in bf16."""
    seen: list[torch.Tensor] = []

    def stop(acts: torch.Tensor) -> None:
        seen.append(acts.detach())
        raise _Reached

    with (attach(model, hook_point, stop), torch.no_grad(), suppress(_Reached),
          torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=autocast)):
        model(input_ids=batch, attention_mask=torch.ones_like(batch), use_cache=False)
    if not seen:
        raise ModelError(f"hook_point {hook_point!r} was not reached by the forward pass")
    return seen[0]
